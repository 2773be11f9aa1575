use actix_web::{HttpResponse, http::StatusCode, web};

use super::{
    Format, change_room, html,
    rooms::{RoomForms, render_room, room_id},
    see_other, stream,
};
use crate::{
    error::AppError,
    form_guard::FormParams,
    models::{
        Invalid, LockVersion, NewTask, RoomId, Task, TaskChanges, TaskId, TaskNotes, TaskTitle,
        User, parse_flag,
    },
    session::{Session, SignedIn},
    startup::AppState,
    store::{StoreError, Updated},
    views::{self, FormState, Page, rooms::Focus, turbo_stream::TurboStream},
};

fn task_path(path: &(String, String)) -> Result<(RoomId, TaskId), AppError> {
    Ok((
        room_id(&path.0)?,
        TaskId::parse(&path.1).ok_or(AppError::NotFound)?,
    ))
}

/// `POST /rooms/{room_id}/tasks` with `task[title]` and optional `task[notes]`
pub async fn create(
    state: web::Data<AppState>,
    session: Session,
    SignedIn(user): SignedIn,
    format: Format,
    path: web::Path<String>,
    params: FormParams,
) -> Result<HttpResponse, AppError> {
    let room_id = room_id(&path)?;
    let raw_title = params.require("task[title]")?;
    let raw_notes = params.get("task[notes]").unwrap_or_default();
    let refuse = |message: String| {
        let form = FormState::invalid(message, &[("title", raw_title), ("notes", raw_notes)]);
        refuse_create(&state, &session, &user, format, room_id, form)
    };
    let parsed = TaskTitle::parse(raw_title).and_then(|title| {
        Ok(NewTask {
            title,
            notes: TaskNotes::parse(raw_notes)?,
        })
    });
    let new_task = match parsed {
        Ok(new_task) => new_task,
        Err(Invalid(message)) => return refuse(message).await,
    };
    let max = state.limits.max_tasks_per_room;
    let by = user.name.clone();
    let made = change_room(&state, room_id, move |mut change, state| async move {
        let (task, counts) = match change.create_task(&new_task, &by, max).await {
            Ok(created) => created,
            Err(StoreError::RoomFull(max)) => return Ok(Err(max)),
            Err(other) => return Err(other.into()),
        };
        let broadcast = views::tasks::created(&state.views, &task, &counts)?;
        let room = change.room().clone();
        state.broadcaster.commit(change, &broadcast).await?;
        Ok(Ok((broadcast, room)))
    })
    .await?;
    let (broadcast, room) = match made {
        Ok(made) => made,
        Err(max) => {
            return refuse(format!(
                "This room is full: it holds the maximum of {max} tasks. Clear some before \
                 adding more."
            ))
            .await;
        }
    };
    Ok(match format {
        Format::TurboStream => {
            let reset = views::tasks::form_reset(&state.views, &room, &session.csrf_token())?;
            stream(StatusCode::OK, broadcast.and(&reset).into_string())
        }
        Format::Html => see_other(&format!("/rooms/{room_id}")),
    })
}

/// A new task that was refused: the form again, with the message and what was typed.
async fn refuse_create(
    state: &AppState,
    session: &Session,
    user: &User,
    format: Format,
    room_id: RoomId,
    form: FormState,
) -> Result<HttpResponse, AppError> {
    let csrf = session.csrf_token();
    Ok(match format {
        Format::TurboStream => {
            let room = state.store.find_room(room_id).await?;
            let body = views::tasks::create_invalid(&state.views, &room, &form, &csrf)?;
            stream(StatusCode::UNPROCESSABLE_ENTITY, body.into_string())
        }
        Format::Html => {
            let page = Page {
                csrf_token: csrf,
                current_user: Some(user),
            };
            let forms = RoomForms {
                new_task: form,
                ..RoomForms::default()
            };
            let body = render_room(state, &page, room_id, forms).await?;
            html(StatusCode::UNPROCESSABLE_ENTITY, body)
        }
    })
}

/// The fields of an edit or toggle, parsed. A field that does not parse as its type at all
/// (`done=maybe`) is a malformed request; a title or notes that break the rules is a
/// validation error the person can fix.
fn parse_changes(params: &FormParams) -> Result<Result<TaskChanges, Invalid>, AppError> {
    let lock_version = LockVersion::parse(params.require("task[lock_version]")?)
        .ok_or(AppError::InvalidParam("task[lock_version]"))?;
    let done = params
        .get("task[done]")
        .map(|raw| parse_flag(raw).ok_or(AppError::InvalidParam("task[done]")))
        .transpose()?;
    let title = params.get("task[title]");
    let notes = params.get("task[notes]");
    if title.is_none() && notes.is_none() && done.is_none() {
        return Err(AppError::BadRequest(
            "nothing to change: send task[title], task[notes] or task[done]",
        ));
    }
    let changes = (|| {
        Ok(TaskChanges {
            title: title.map(TaskTitle::parse).transpose()?,
            notes: notes.map(TaskNotes::parse).transpose()?,
            done,
            lock_version,
        })
    })();
    Ok(changes)
}

/// `PATCH /rooms/{room_id}/tasks/{task_id}` with `task[lock_version]` and any of
/// `task[title]`, `task[notes]`, `task[done]`
pub async fn update(
    state: web::Data<AppState>,
    session: Session,
    SignedIn(user): SignedIn,
    format: Format,
    path: web::Path<(String, String)>,
    params: FormParams,
) -> Result<HttpResponse, AppError> {
    let (room_id, task_id) = task_path(&path)?;
    let refused = |current, status, message| RefusedEdit {
        room_id,
        task_id,
        current,
        status,
        message,
    };
    let changes = match parse_changes(&params)? {
        Ok(changes) => changes,
        Err(Invalid(message)) => {
            let current = state.store.find_task(room_id, task_id).await?;
            let edit = refused(current, StatusCode::UNPROCESSABLE_ENTITY, Some(message));
            return refuse_edit(&state, &session, &user, format, &params, edit).await;
        }
    };
    let by = user.name.clone();
    let edit = change_room(&state, room_id, move |mut change, state| async move {
        Ok(match change.update_task(task_id, &changes, &by).await? {
            Updated::Changed(task, counts) => {
                let broadcast = views::tasks::updated(&state.views, &task, &counts)?;
                state.broadcaster.commit(change, &broadcast).await?;
                Edit::Made(broadcast)
            }
            // Nothing was written: dropping the change rolls it back.
            not_made => Edit::NotMade(not_made),
        })
    })
    .await?;
    match edit {
        Edit::Made(broadcast) => Ok(respond(format, room_id, broadcast.into_string())),
        // A repeated toggle: the requester's page is brought up to date; nobody else's changes.
        Edit::NotMade(Updated::Unchanged(task, counts) | Updated::Changed(task, counts)) => {
            let body = views::tasks::updated(&state.views, &task, &counts)?;
            Ok(respond(format, room_id, body.into_string()))
        }
        Edit::NotMade(Updated::Conflict(current)) => {
            let edit = refused(*current, StatusCode::CONFLICT, None);
            refuse_edit(&state, &session, &user, format, &params, edit).await
        }
    }
}

/// What the write lane did with an edit.
enum Edit {
    /// Applied and broadcast.
    Made(TurboStream),
    /// Not applied, and why.
    NotMade(Updated),
}

/// An edit that was not applied: the task as it is now, and why.
struct RefusedEdit {
    room_id: RoomId,
    task_id: TaskId,
    current: Task,
    status: StatusCode,
    message: Option<String>,
}

/// The edit form again, with what the person typed, so a refused edit loses nothing.
async fn refuse_edit(
    state: &AppState,
    session: &Session,
    user: &User,
    format: Format,
    params: &FormParams,
    edit: RefusedEdit,
) -> Result<HttpResponse, AppError> {
    let RefusedEdit {
        room_id,
        task_id,
        current,
        status,
        message,
    } = edit;
    let typed: Vec<(&'static str, &str)> = [("title", "task[title]"), ("notes", "task[notes]")]
        .into_iter()
        .filter_map(|(key, field)| params.get(field).map(|v| (key, v)))
        .collect();
    let form = FormState {
        values: typed.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        error: message,
    };
    let conflict = status == StatusCode::CONFLICT;
    let csrf = session.csrf_token();
    Ok(match format {
        Format::TurboStream => {
            let body = views::tasks::edit_refused(&state.views, &current, &form, conflict, &csrf)?;
            stream(status, body.into_string())
        }
        Format::Html => {
            let page = Page {
                csrf_token: csrf,
                current_user: Some(user),
            };
            let body = if conflict {
                let room = state.store.find_room(room_id).await?;
                views::tasks::refused_page(&state.views, &page, &room, &current, &form, true)?
            } else {
                let forms = RoomForms {
                    focus: Some(Focus {
                        task_id,
                        form,
                        conflict: false,
                    }),
                    ..RoomForms::default()
                };
                render_room(state, &page, room_id, forms).await?
            };
            html(status, body)
        }
    })
}

/// `DELETE /rooms/{room_id}/tasks/{task_id}`
pub async fn destroy(
    state: web::Data<AppState>,
    _user: SignedIn,
    format: Format,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (room_id, task_id) = task_path(&path)?;
    let broadcast = change_room(&state, room_id, move |mut change, state| async move {
        let counts = change.delete_task(task_id).await?;
        let broadcast = views::tasks::removed(&state.views, room_id, &[task_id], &counts)?;
        state.broadcaster.commit(change, &broadcast).await?;
        views::tasks::forget(&state.views, &[task_id]);
        Ok(broadcast)
    })
    .await?;
    Ok(respond(format, room_id, broadcast.into_string()))
}

/// `DELETE /rooms/{room_id}/tasks/completed`: removes every done task at once.
pub async fn clear_completed(
    state: web::Data<AppState>,
    _user: SignedIn,
    format: Format,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let room_id = room_id(&path)?;
    let broadcast = change_room(&state, room_id, move |mut change, state| async move {
        let (removed, counts) = change.clear_completed().await?;
        let broadcast = views::tasks::removed(&state.views, room_id, &removed, &counts)?;
        state.broadcaster.commit(change, &broadcast).await?;
        views::tasks::forget(&state.views, &removed);
        Ok(broadcast)
    })
    .await?;
    Ok(respond(format, room_id, broadcast.into_string()))
}

/// A successful mutation: the stream for Turbo, or back to the room page.
fn respond(format: Format, room_id: RoomId, body: String) -> HttpResponse {
    match format {
        Format::TurboStream => stream(StatusCode::OK, body),
        Format::Html => see_other(&format!("/rooms/{room_id}")),
    }
}
