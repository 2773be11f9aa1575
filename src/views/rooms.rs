use serde::Serialize;
use tera::Context;

use super::{
    FormState, Page, Views,
    tasks::{CacheMark, push_page_tasks},
    turbo_stream::TurboStream,
};
use crate::{
    error::AppError,
    models::{Room, RoomCounts, RoomSummary, Task, TaskId},
    pubsub::Position,
};

/// `room_7`: the room's header, which holds its name.
pub fn dom_id(room: &Room) -> String {
    format!("room_{}", room.id)
}

/// The rooms index with the new-room form.
pub fn index(
    views: &Views,
    page: &Page<'_>,
    rooms: &[RoomSummary],
    form: &FormState,
) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("rooms", rooms);
    context.insert("form", form);
    views.page("rooms/index.html", page, context)
}

/// A task on the room page that the person is in the middle of editing.
#[derive(Debug, Serialize)]
pub struct Focus {
    pub task_id: TaskId,
    pub form: FormState,
    /// The task changed under them; the page shows how it looks now.
    pub conflict: bool,
}

/// Everything the room page shows.
#[derive(Debug)]
pub struct RoomPage<'a> {
    pub room: &'a Room,
    pub tasks: &'a [Task],
    pub counts: RoomCounts,
    pub new_task: &'a FormState,
    pub rename: &'a FormState,
    pub focus: Option<&'a Focus>,
    /// The room's stream name, signed, for the page's cable subscription.
    pub signed_stream: &'a str,
    /// Where the stream stood when the page's data was read; the subscription asks for
    /// everything after it.
    pub position: Option<&'a Position>,
    /// Where the task markup cache stood before `tasks` were read ([`super::tasks::cache_mark`]).
    pub cache_mark: CacheMark,
}

/// Where `rooms/show.html` puts the room's tasks. Autoescaping turns every `<` of user text into
/// `&lt;`, so this can only come from the template itself.
const TASKS_SLOT: &str = "<!--tasks-->";

/// About what one task's markup on the page takes, to size the page's buffer.
const TASK_BYTES: usize = 2048;

pub fn show(views: &Views, page: &Page<'_>, room_page: &RoomPage<'_>) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("room", room_page.room);
    context.insert("counts", &room_page.counts);
    context.insert("new_task", room_page.new_task);
    context.insert("rename", room_page.rename);
    context.insert("signed_stream", room_page.signed_stream);
    if let Some(position) = room_page.position {
        context.insert("stream_epoch", &*position.epoch);
        context.insert("stream_offset", &position.offset);
    }
    // The page around its tasks is a few KB; the tasks are most of it (about 2 KB each). They
    // go straight into the one buffer the page is sent from, not through Tera's context and
    // output, which would copy them twice more.
    let frame = views.page("rooms/show.html", page, context)?;
    let (before, after) = frame
        .split_once(TASKS_SLOT)
        .ok_or_else(|| AppError::internal("rooms/show.html has no place for its tasks"))?;
    let mut html = String::with_capacity(frame.len() + room_page.tasks.len() * TASK_BYTES);
    html.push_str(before);
    push_page_tasks(
        &mut html,
        views,
        room_page.tasks,
        room_page.cache_mark,
        room_page.focus,
        &page.csrf_token,
    )?;
    html.push_str(after);
    Ok(html)
}

fn header(
    views: &Views,
    room: &Room,
    rename: Option<&FormState>,
    csrf: Option<&str>,
) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("room", room);
    context.insert("rename", &rename);
    context.insert("csrf_token", &csrf);
    views.render("rooms/_header.html", &context)
}

/// The stream every tab of the room gets when it is renamed: the header and the tab's title.
pub fn renamed(views: &Views, room: &Room) -> Result<TurboStream, AppError> {
    let mut context = Context::new();
    context.insert("room", room);
    let title = views.render("rooms/_title.html", &context)?;
    Ok(TurboStream::new()
        .replace(&dom_id(room), &header(views, room, None, None)?)
        .update("page_title", &title))
}

/// The header again with the rename form open and its error, for the person who sent it.
pub fn rename_invalid(
    views: &Views,
    room: &Room,
    form: &FormState,
    csrf: &str,
) -> Result<TurboStream, AppError> {
    Ok(TurboStream::new().replace(&dom_id(room), &header(views, room, Some(form), Some(csrf))?))
}

/// The new-room form with its error, for the person who sent it.
pub fn create_invalid(
    views: &Views,
    form: &FormState,
    csrf: &str,
) -> Result<TurboStream, AppError> {
    let mut context = Context::new();
    context.insert("form", form);
    context.insert("csrf_token", csrf);
    Ok(TurboStream::new().replace("new_room", &views.render("rooms/_form.html", &context)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{LockVersion, RoomId};

    #[test]
    fn the_tasks_go_where_the_template_puts_them_and_user_text_cannot_move_them() {
        let views = Views::new().unwrap();
        let room = Room {
            id: RoomId(3),
            name: TASKS_SLOT.into(),
        };
        let tasks: Vec<Task> = (1..=2)
            .map(|id| Task {
                id: TaskId(id),
                room_id: room.id,
                title: format!("{TASKS_SLOT} number {id}"),
                notes: String::new(),
                done: false,
                lock_version: LockVersion(0),
                updated_by: "Ada".into(),
            })
            .collect();
        let page = Page {
            csrf_token: "tok".into(),
            current_user: None,
        };
        let html = show(
            &views,
            &page,
            &RoomPage {
                room: &room,
                tasks: &tasks,
                counts: RoomCounts::of(&tasks),
                new_task: &FormState::default(),
                rename: &FormState::default(),
                focus: None,
                signed_stream: "signed",
                position: None,
                cache_mark: super::super::tasks::cache_mark(&views),
            },
        )
        .unwrap();
        assert!(!html.contains(TASKS_SLOT), "{html}");
        let list = html.find("<div id=\"tasks\"").unwrap();
        let footer = html.find("<footer class=\"room-footer\">").unwrap();
        for id in [1, 2] {
            let at = html.find(&format!("id=\"task_{id}\"")).unwrap();
            assert!(
                list < at && at < footer,
                "task {id} outside the list: {html}"
            );
        }
        assert!(html.contains("&lt;!--tasks--&gt; number 2"));
        // The page ends as the layout does.
        assert!(html.trim_end().ends_with("</html>"), "{html}");
    }
}
