//! The only code that touches the template engine. Each function renders one action's page or
//! fragment from `templates/`; pages and streams share the same partials (`tasks/_task.html`),
//! so a task looks the same whether it arrived with the page or over a stream.

pub mod rooms;
pub mod sessions;
pub mod tasks;
pub mod turbo_stream;

use std::collections::HashMap;

use serde::Serialize;
use tera::{Context, Tera};

use crate::{assets, error::AppError, models::User};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The compiled templates, and the task markup already rendered with them.
pub struct Views {
    tera: Tera,
    task_fragments: tasks::TaskFragments,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Views")
    }
}

/// What every full page needs: who is signed in and this page's CSRF token.
#[derive(Debug, Serialize)]
pub struct Page<'a> {
    pub csrf_token: String,
    pub current_user: Option<&'a User>,
}

/// A form as the person left it: what they typed and what was wrong with it.
#[derive(Debug, Default, Serialize)]
pub struct FormState {
    pub values: HashMap<&'static str, String>,
    pub error: Option<String>,
}

impl FormState {
    pub fn invalid(error: impl Into<String>, values: &[(&'static str, &str)]) -> Self {
        Self {
            values: values.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            error: Some(error.into()),
        }
    }
}

impl Views {
    /// Compiles every embedded template; fails on the first syntax error.
    pub fn new() -> Result<Self, tera::Error> {
        let mut tera = Tera::default();
        // Escape user text in everything we render: every template is HTML.
        tera.autoescape_on(vec![".html"]);
        tera.add_raw_templates(TEMPLATES.iter().copied())?;
        tera.register_function("asset_path", asset_path);
        Ok(Self {
            tera,
            task_fragments: tasks::TaskFragments::default(),
        })
    }

    fn render(&self, name: &str, context: &Context) -> Result<String, AppError> {
        Ok(self.tera.render(name, context)?)
    }

    fn page(&self, name: &str, page: &Page<'_>, mut context: Context) -> Result<String, AppError> {
        context.insert("csrf_token", &page.csrf_token);
        context.insert("current_user", &page.current_user);
        self.render(name, &context)
    }
}

/// `{{ asset_path(name="application.css") }}`: the fingerprinted URL of an asset.
fn asset_path(args: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    let name = args
        .get("name")
        .and_then(tera::Value::as_str)
        .ok_or_else(|| tera::Error::msg("asset_path needs name=\"...\""))?;
    match assets::ASSETS.iter().find(|a| a.logical == name) {
        Some(asset) => Ok(asset.path.into()),
        None => Err(tera::Error::msg(format!("no asset named {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_has_an_autoescaped_name() {
        Views::new().unwrap();
        for (name, _) in TEMPLATES {
            assert!(name.ends_with(".html"), "{name} would not be autoescaped");
        }
    }
}
