use tera::Context;

use super::{FormState, Page, Views};
use crate::error::AppError;

/// The sign-in page.
pub fn new(
    views: &Views,
    page: &Page<'_>,
    form: &FormState,
    return_to: Option<&str>,
) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("form", form);
    context.insert("return_to", &return_to);
    views.page("sessions/new.html", page, context)
}
