use serde::Serialize;
use tera::Context;

use super::{FormState, Page, Views, turbo_stream::TurboStream};
use crate::{
    error::AppError,
    models::{Room, RoomCounts, RoomId, Task, TaskId},
};

/// `task_42`, as Rails' `dom_id(task)`.
pub fn dom_id(id: TaskId) -> String {
    format!("task_{id}")
}

/// `counts_room_7`, as Rails' `dom_id(room, :counts)`.
pub fn counts_dom_id(room: RoomId) -> String {
    format!("counts_room_{room}")
}

/// One task as the room page lists it.
#[derive(Debug, Serialize)]
pub struct TaskItem<'a> {
    pub task: &'a Task,
    pub form: Option<&'a FormState>,
    pub conflict: bool,
}

impl<'a> TaskItem<'a> {
    pub fn plain(task: &'a Task) -> Self {
        Self {
            task,
            form: None,
            conflict: false,
        }
    }
}

fn task(views: &Views, item: &TaskItem<'_>, csrf: Option<&str>) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("item", item);
    context.insert("csrf_token", &csrf);
    views.render("tasks/_task.html", &context)
}

fn counts(views: &Views, room: RoomId, counts: &RoomCounts) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("room_id", &room);
    context.insert("counts", counts);
    views.render("tasks/_counts.html", &context)
}

fn new_form(views: &Views, room: &Room, form: &FormState, csrf: &str) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("room", room);
    context.insert("new_task", form);
    context.insert("csrf_token", csrf);
    views.render("tasks/_form.html", &context)
}

/// What every tab of the room gets when a task is added.
pub fn created(
    views: &Views,
    created: &Task,
    room_counts: &RoomCounts,
) -> Result<TurboStream, AppError> {
    Ok(TurboStream::new()
        .append("tasks", &task(views, &TaskItem::plain(created), None)?)
        .replace(
            &counts_dom_id(created.room_id),
            &counts(views, created.room_id, room_counts)?,
        ))
}

/// What every tab of the room gets when a task is edited or toggled.
pub fn updated(
    views: &Views,
    updated: &Task,
    room_counts: &RoomCounts,
) -> Result<TurboStream, AppError> {
    Ok(TurboStream::new()
        .replace(
            &dom_id(updated.id),
            &task(views, &TaskItem::plain(updated), None)?,
        )
        .replace(
            &counts_dom_id(updated.room_id),
            &counts(views, updated.room_id, room_counts)?,
        ))
}

/// What every tab of the room gets when tasks are deleted (one, or all done ones at once).
pub fn removed(
    views: &Views,
    room: RoomId,
    ids: &[TaskId],
    room_counts: &RoomCounts,
) -> Result<TurboStream, AppError> {
    let stream = ids
        .iter()
        .fold(TurboStream::new(), |stream, id| stream.remove(&dom_id(*id)));
    Ok(stream.replace(&counts_dom_id(room), &counts(views, room, room_counts)?))
}

/// A blank new-task form, for the person who just added one.
pub fn form_reset(views: &Views, room: &Room, csrf: &str) -> Result<TurboStream, AppError> {
    Ok(TurboStream::new().replace(
        "new_task",
        &new_form(views, room, &FormState::default(), csrf)?,
    ))
}

/// The new-task form with its error, for the person who sent it.
pub fn create_invalid(
    views: &Views,
    room: &Room,
    form: &FormState,
    csrf: &str,
) -> Result<TurboStream, AppError> {
    Ok(TurboStream::new().replace("new_task", &new_form(views, room, form, csrf)?))
}

/// The task with its edit form open, an error or a conflict notice, for the person who sent the
/// edit.
pub fn edit_refused(
    views: &Views,
    current: &Task,
    form: &FormState,
    conflict: bool,
    csrf: &str,
) -> Result<TurboStream, AppError> {
    let item = TaskItem {
        task: current,
        form: Some(form),
        conflict,
    };
    Ok(TurboStream::new().replace(&dom_id(current.id), &task(views, &item, Some(csrf))?))
}

/// The no-JavaScript page for a refused edit: the task as it is now, with the notice.
pub fn refused_page(
    views: &Views,
    page: &Page<'_>,
    room: &Room,
    current: &Task,
    form: &FormState,
    conflict: bool,
) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("room", room);
    context.insert(
        "item",
        &TaskItem {
            task: current,
            form: Some(form),
            conflict,
        },
    );
    views.page("tasks/edit.html", page, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::LockVersion;

    fn hostile_task() -> Task {
        Task {
            id: TaskId(42),
            room_id: RoomId(7),
            title: "<script>alert('t')</script>".into(),
            notes: "<img src=x onerror=alert(1)>".into(),
            done: false,
            lock_version: LockVersion(0),
            updated_by: "<b>Mallory</b>".into(),
        }
    }

    #[test]
    fn user_text_in_a_streamed_task_is_escaped() {
        let views = Views::new().unwrap();
        let stream = created(&views, &hostile_task(), &RoomCounts { open: 1, done: 0 }).unwrap();
        let html = stream.as_str();
        assert!(html.contains("id=\"task_42\""));
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>Mallory"), "{html}");
    }

    #[test]
    fn broadcast_fragments_carry_no_csrf_token() {
        let views = Views::new().unwrap();
        let stream = updated(&views, &hostile_task(), &RoomCounts::default()).unwrap();
        assert!(!stream.as_str().contains("authenticity_token"));
    }
}
