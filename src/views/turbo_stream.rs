//! Turbo Stream messages: `<turbo-stream action="..." target="..."><template>...</template>`.
//! Targets are DOM ids we generate (`task_42`), never user text; content is already-escaped HTML
//! from our templates.

/// The media type Turbo asks for and applies.
pub const CONTENT_TYPE: &str = "text/vnd.turbo-stream.html; charset=utf-8";

/// One or more stream actions, rendered in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TurboStream(String);

impl TurboStream {
    pub fn new() -> Self {
        Self::default()
    }

    fn action(mut self, action: &str, target: &str, content: Option<&str>) -> Self {
        debug_assert!(
            target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "stream targets are generated ids: {target}"
        );
        self.0.push_str("<turbo-stream action=\"");
        self.0.push_str(action);
        self.0.push_str("\" target=\"");
        self.0.push_str(target);
        self.0.push_str("\">");
        if let Some(content) = content {
            self.0.push_str("<template>");
            self.0.push_str(content);
            self.0.push_str("</template>");
        }
        self.0.push_str("</turbo-stream>\n");
        self
    }

    /// Adds `content` at the end of `target`'s children (replacing a child with the same id).
    pub fn append(self, target: &str, content: &str) -> Self {
        self.action("append", target, Some(content))
    }

    /// Replaces the element `target` with `content`.
    pub fn replace(self, target: &str, content: &str) -> Self {
        self.action("replace", target, Some(content))
    }

    /// Replaces the contents of the element `target` with `content`.
    pub fn update(self, target: &str, content: &str) -> Self {
        self.action("update", target, Some(content))
    }

    /// Removes the element `target`.
    pub fn remove(self, target: &str) -> Self {
        self.action("remove", target, None)
    }

    /// Tells the page to reload itself (Turbo 8 morphs it in place when the page says so).
    pub fn refresh(mut self) -> Self {
        self.0
            .push_str("<turbo-stream action=\"refresh\"></turbo-stream>\n");
        self
    }

    /// Appends every action of `other`.
    pub fn and(mut self, other: &TurboStream) -> Self {
        self.0.push_str(&other.0);
        self
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_render_in_order_with_templates_where_needed() {
        let stream = TurboStream::new()
            .append("tasks", "<div id=\"task_1\">A</div>")
            .remove("task_2");
        assert_eq!(
            stream.as_str(),
            "<turbo-stream action=\"append\" target=\"tasks\"><template><div id=\"task_1\">A</div>\
             </template></turbo-stream>\n<turbo-stream action=\"remove\" target=\"task_2\">\
             </turbo-stream>\n"
        );
    }
}
