use serde::Serialize;
use tera::Context;

use super::{FormState, Page, Views, tasks::page_tasks, turbo_stream::TurboStream};
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
}

pub fn show(views: &Views, page: &Page<'_>, room_page: &RoomPage<'_>) -> Result<String, AppError> {
    let tasks_html = page_tasks(views, room_page.tasks, room_page.focus, &page.csrf_token)?;
    let mut context = Context::new();
    context.insert("room", room_page.room);
    context.insert("tasks_html", &tasks_html);
    context.insert("counts", &room_page.counts);
    context.insert("new_task", room_page.new_task);
    context.insert("rename", room_page.rename);
    context.insert("signed_stream", room_page.signed_stream);
    if let Some(position) = room_page.position {
        context.insert("stream_epoch", &*position.epoch);
        context.insert("stream_offset", &position.offset);
    }
    views.page("rooms/show.html", page, context)
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
