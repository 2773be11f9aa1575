use actix_web::{HttpResponse, http::StatusCode, web};

use super::{Format, change_room, html, see_other, stream};
use crate::{
    cable::room_stream,
    error::AppError,
    form_guard::FormParams,
    models::{RoomCounts, RoomId, RoomName},
    session::{Session, SignedIn},
    startup::AppState,
    views::{
        self, FormState, Page,
        rooms::{Focus, RoomPage},
    },
};

/// Parses the `{room_id}` path segment; anything but a positive id is not found.
pub fn room_id(raw: &str) -> Result<RoomId, AppError> {
    RoomId::parse(raw).ok_or(AppError::NotFound)
}

/// `GET /rooms`
pub async fn index(
    state: web::Data<AppState>,
    session: Session,
    SignedIn(user): SignedIn,
) -> Result<HttpResponse, AppError> {
    let rooms = state.store.list_rooms().await?;
    let page = Page {
        csrf_token: session.csrf_token(),
        current_user: Some(&user),
    };
    let body = views::rooms::index(&state.views, &page, &rooms, &FormState::default())?;
    Ok(html(StatusCode::OK, body))
}

/// `POST /rooms` with `room[name]`
pub async fn create(
    state: web::Data<AppState>,
    session: Session,
    SignedIn(user): SignedIn,
    format: Format,
    params: FormParams,
) -> Result<HttpResponse, AppError> {
    let raw = params.require("room[name]")?;
    let name = match RoomName::parse(raw) {
        Ok(name) => name,
        Err(invalid) => {
            let form = FormState::invalid(invalid.0, &[("name", raw)]);
            let csrf = session.csrf_token();
            return Ok(match format {
                Format::TurboStream => stream(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    views::rooms::create_invalid(&state.views, &form, &csrf)?.into_string(),
                ),
                Format::Html => {
                    let rooms = state.store.list_rooms().await?;
                    let page = Page {
                        csrf_token: csrf,
                        current_user: Some(&user),
                    };
                    let body = views::rooms::index(&state.views, &page, &rooms, &form)?;
                    html(StatusCode::UNPROCESSABLE_ENTITY, body)
                }
            });
        }
    };
    let room = state
        .write_lane
        .run({
            let state = state.clone();
            async move { Ok(state.store.create_room(&name).await?) }
        })
        .await?;
    Ok(see_other(&format!("/rooms/{}", room.id)))
}

/// `GET /rooms/{room_id}`
pub async fn show(
    state: web::Data<AppState>,
    session: Session,
    SignedIn(user): SignedIn,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let room_id = room_id(&path)?;
    let page = Page {
        csrf_token: session.csrf_token(),
        current_user: Some(&user),
    };
    let body = render_room(&state, &page, room_id, RoomForms::default()).await?;
    Ok(html(StatusCode::OK, body))
}

/// The forms on a room page as the person left them, when a post without JavaScript is refused.
#[derive(Default)]
pub struct RoomForms {
    pub new_task: FormState,
    pub rename: FormState,
    pub focus: Option<Focus>,
}

/// Renders a room page, loading what it shows.
pub async fn render_room(
    state: &AppState,
    page: &Page<'_>,
    room_id: RoomId,
    forms: RoomForms,
) -> Result<String, AppError> {
    let stream = room_stream(room_id);
    // Where the room's stream stands, read BEFORE the tasks: anything published after this
    // point is replayed to the page when it subscribes, so no change can fall in between.
    let position = state.pubsub.position(&stream).await;
    let cache_mark = views::tasks::cache_mark(&state.views);
    let (room, tasks) = state.store.room_with_tasks(room_id).await?;
    let counts = RoomCounts::of(&tasks);
    let signed_stream = state.cable.signer.sign(&stream);
    views::rooms::show(
        &state.views,
        page,
        &RoomPage {
            room: &room,
            tasks: &tasks,
            counts,
            new_task: &forms.new_task,
            rename: &forms.rename,
            focus: forms.focus.as_ref(),
            signed_stream: &signed_stream,
            position: position.as_ref(),
            cache_mark,
        },
    )
}

/// `PATCH /rooms/{room_id}` with `room[name]`
pub async fn update(
    state: web::Data<AppState>,
    session: Session,
    SignedIn(user): SignedIn,
    format: Format,
    path: web::Path<String>,
    params: FormParams,
) -> Result<HttpResponse, AppError> {
    let room_id = room_id(&path)?;
    let raw = params.require("room[name]")?;
    match RoomName::parse(raw) {
        Ok(name) => {
            let (room, renamed) =
                change_room(&state, room_id, move |mut change, state| async move {
                    let room = change.rename(&name).await?;
                    let renamed = views::rooms::renamed(&state.views, &room)?;
                    state.broadcaster.commit(change, &renamed).await?;
                    Ok((room, renamed))
                })
                .await?;
            Ok(match format {
                Format::TurboStream => stream(StatusCode::OK, renamed.into_string()),
                Format::Html => see_other(&format!("/rooms/{}", room.id)),
            })
        }
        Err(invalid) => {
            let form = FormState::invalid(invalid.0, &[("name", raw)]);
            let csrf = session.csrf_token();
            Ok(match format {
                Format::TurboStream => {
                    let room = state.store.find_room(room_id).await?;
                    stream(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        views::rooms::rename_invalid(&state.views, &room, &form, &csrf)?
                            .into_string(),
                    )
                }
                Format::Html => {
                    let page = Page {
                        csrf_token: csrf,
                        current_user: Some(&user),
                    };
                    let forms = RoomForms {
                        rename: form,
                        ..RoomForms::default()
                    };
                    let body = render_room(&state, &page, room_id, forms).await?;
                    html(StatusCode::UNPROCESSABLE_ENTITY, body)
                }
            })
        }
    }
}
