use actix_web::{HttpResponse, http::StatusCode, web};
use serde::Deserialize;

use super::{html, see_other};
use crate::{
    error::AppError,
    form_guard::FormParams,
    models::{DisplayName, User, UserId},
    session::Session,
    startup::AppState,
    views::{self, FormState, Page},
};

#[derive(Deserialize)]
pub struct NewQuery {
    return_to: Option<String>,
}

/// Only paths on this site are followed after sign-in, never another origin.
fn local_path(path: Option<&str>) -> Option<&str> {
    path.filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.contains('\\'))
}

/// `GET /session/new`
pub async fn new(
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<NewQuery>,
) -> Result<HttpResponse, AppError> {
    let user = session.user();
    let page = Page {
        csrf_token: session.csrf_token(),
        current_user: user.as_ref(),
    };
    let body = views::sessions::new(
        &state.views,
        &page,
        &FormState::default(),
        local_path(query.return_to.as_deref()),
    )?;
    Ok(html(StatusCode::OK, body))
}

/// `POST /session` with `name`: signs in and goes back where the person was headed.
pub async fn create(
    state: web::Data<AppState>,
    session: Session,
    params: FormParams,
) -> Result<HttpResponse, AppError> {
    let raw = params.require("name")?;
    let return_to = local_path(params.get("return_to"));
    match DisplayName::parse(raw) {
        Ok(name) => {
            session.sign_in(User {
                id: UserId::random(),
                name,
            });
            Ok(see_other(return_to.unwrap_or("/rooms")))
        }
        Err(invalid) => {
            let page = Page {
                csrf_token: session.csrf_token(),
                current_user: None,
            };
            let form = FormState::invalid(invalid.0, &[("name", raw)]);
            let body = views::sessions::new(&state.views, &page, &form, return_to)?;
            Ok(html(StatusCode::UNPROCESSABLE_ENTITY, body))
        }
    }
}

/// `DELETE /session`: signs out.
pub async fn destroy(session: Session) -> HttpResponse {
    session.sign_out();
    see_other("/session/new")
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/rooms/7")), Some("/rooms/7"));
        assert_eq!(local_path(Some("//evil.example")), None);
        assert_eq!(local_path(Some("/\\evil.example")), None);
        assert_eq!(local_path(Some("https://evil.example")), None);
        assert_eq!(local_path(None), None);
    }
}
