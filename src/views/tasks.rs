use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use serde::Serialize;
use tera::Context;

use super::{FormState, Page, Views, rooms::Focus, turbo_stream::TurboStream};
use crate::{
    error::AppError,
    models::{Room, RoomCounts, RoomId, Task, TaskId},
};

/// Where a task's cached page markup leaves room for the viewer's CSRF token
/// (`shared/_token.html`). Autoescaping turns every `<` of user text into `&lt;`, so this can
/// only come from the template itself.
const TOKEN_SLOT: &str = "<!--csrf-->";

/// How much task markup is kept (about a thousand tasks); past it the cache starts over, and
/// refills from the next page views. Tasks deleted in another process leave their markup here
/// until then (this process never hears their ids).
const MAX_CACHED_BYTES: usize = 2 << 20;

/// How many recent deletions the cache remembers, to refuse markup of a deleted task from a page
/// that read the task before it was deleted. A page whose reading is older than the oldest
/// deletion remembered caches nothing: under the benchmark's load, about 2,000 deletions a
/// second, that is a page read more than an eighth of a second before it rendered.
const FORGOTTEN_KEPT: usize = 256;

/// Each task's room-page markup, rendered once and reused for every page view until the task
/// changes: a room page is mostly its tasks, and rendering 50 of them was most of a page
/// view's CPU. An entry is used only while it was rendered from a task equal to the one being
/// shown, every field compared, so an edit can never show a stale copy. (Ids are never reused,
/// on either database, so a deleted task's id never comes back.)
#[derive(Default)]
pub struct TaskFragments {
    cache: Mutex<FragmentCache>,
}

/// Where the cache's clock stood before a page read its tasks from the store: markup rendered
/// from that read is kept only if none of its tasks was deleted since.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheMark(u64);

/// A task's page markup, with where the viewer's CSRF token goes found once, when it is
/// rendered: a page view then only copies. (Searching each fragment for its slots on every
/// view was a fifth of a page view's instructions.)
struct Fragment {
    markup: Box<str>,
    /// Where each [`TOKEN_SLOT`] starts in `markup`.
    slots: Box<[usize]>,
}

impl Fragment {
    fn new(markup: String) -> Self {
        let slots = markup.match_indices(TOKEN_SLOT).map(|(at, _)| at).collect();
        Self {
            markup: markup.into_boxed_str(),
            slots,
        }
    }

    fn len(&self) -> usize {
        self.markup.len()
    }

    /// Appends the markup to `html` with `token` in place of every slot.
    fn push_to(&self, html: &mut String, token: &str) {
        let mut from = 0;
        for &at in &self.slots {
            html.push_str(&self.markup[from..at]);
            html.push_str(token);
            from = at + TOKEN_SLOT.len();
        }
        html.push_str(&self.markup[from..]);
    }
}

#[derive(Default)]
struct FragmentCache {
    entries: HashMap<TaskId, (Task, Arc<Fragment>)>,
    /// The markup's size, over all entries.
    bytes: usize,
    /// Counts deletions.
    clock: u64,
    /// The latest deletions, oldest first, each with the clock after it.
    forgotten: VecDeque<(TaskId, CacheMark)>,
    /// Marks before this may predate a deletion no longer in `forgotten`.
    horizon: CacheMark,
}

impl TaskFragments {
    fn lock(&self) -> std::sync::MutexGuard<'_, FragmentCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take before reading the tasks a page will show.
    fn mark(&self) -> CacheMark {
        CacheMark(self.lock().clock)
    }

    fn get(&self, task: &Task) -> Option<Arc<Fragment>> {
        self.lock()
            .entries
            .get(&task.id)
            .filter(|(cached, _)| cached == task)
            .map(|(_, html)| html.clone())
    }

    /// Keeps `html`, rendered from `task` as read after `mark`, unless the task has been
    /// deleted since (a page read just before a deletion would otherwise put its markup back
    /// for good).
    fn put(&self, task: &Task, html: Arc<Fragment>, mark: CacheMark) {
        let mut cache = self.lock();
        let deleted_since = mark < cache.horizon
            || cache
                .forgotten
                .iter()
                .any(|(id, when)| *id == task.id && *when > mark);
        if deleted_since {
            return;
        }
        if cache.bytes + html.len() > MAX_CACHED_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        cache.bytes += html.len();
        if let Some((_, old)) = cache.entries.insert(task.id, (task.clone(), html)) {
            cache.bytes -= old.len();
        }
    }

    /// Drops deleted tasks' markup, and keeps it from coming back: call once the deletion is
    /// committed, so that a page which reads after this cannot see the tasks.
    fn forget(&self, ids: &[TaskId]) {
        let mut cache = self.lock();
        cache.clock += 1;
        let now = CacheMark(cache.clock);
        for id in ids {
            if let Some((_, html)) = cache.entries.remove(id) {
                cache.bytes -= html.len();
            }
            cache.forgotten.push_back((*id, now));
        }
        while cache.forgotten.len() > FORGOTTEN_KEPT {
            if let Some((_, when)) = cache.forgotten.pop_front() {
                cache.horizon = when;
            }
        }
    }
}

/// Where the task markup cache stands: take it before reading the tasks a page will show, and
/// render them with it ([`push_page_tasks`]).
pub fn cache_mark(views: &Views) -> CacheMark {
    views.task_fragments.mark()
}

/// Tasks that are gone: their markup leaves the cache. Call once their deletion is committed.
pub fn forget(views: &Views, ids: &[TaskId]) {
    views.task_fragments.forget(ids);
}

/// How much task markup the cache holds: tasks, and bytes of markup.
pub fn cache_size(views: &Views) -> (usize, usize) {
    let cache = views.task_fragments.lock();
    (cache.entries.len(), cache.bytes)
}

/// Appends the room page's task list, for a viewer whose CSRF token is `csrf`, to `html`: each
/// task from the cache (rendered on a miss and kept, if none of `tasks`, read after `mark`, has
/// been deleted since), except the one the viewer is editing (`focus`), which is rendered with
/// their form as they left it.
pub fn push_page_tasks(
    html: &mut String,
    views: &Views,
    tasks: &[Task],
    mark: CacheMark,
    focus: Option<&Focus>,
    csrf: &str,
) -> Result<(), AppError> {
    let token = tera::escape_html(csrf);
    for current in tasks {
        if let Some(focus) = focus.filter(|f| f.task_id == current.id) {
            let item = TaskItem {
                task: current,
                form: Some(&focus.form),
                conflict: focus.conflict,
            };
            html.push_str(&task(views, &item, Some(csrf))?);
            continue;
        }
        let fragment = match views.task_fragments.get(current) {
            Some(fragment) => fragment,
            None => {
                let fragment = Arc::new(Fragment::new(task_with_token_slot(views, current)?));
                views.task_fragments.put(current, fragment.clone(), mark);
                fragment
            }
        };
        fragment.push_to(html, &token);
    }
    Ok(())
}

fn task_with_token_slot(views: &Views, current: &Task) -> Result<String, AppError> {
    let mut context = Context::new();
    context.insert("item", &TaskItem::plain(current));
    context.insert("csrf_token", &None::<&str>);
    context.insert("csrf_slot", &true);
    views.render("tasks/_task.html", &context)
}

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
    use crate::{models::LockVersion, views::FormState};

    #[test]
    fn a_fragment_puts_the_token_in_every_slot_and_copies_the_rest() {
        let fill = |markup: &str| {
            let mut html = String::from(">");
            Fragment::new(markup.to_owned()).push_to(&mut html, "T");
            html
        };
        assert_eq!(
            fill("<a><!--csrf--></a><b><!--csrf--></b>"),
            "><a>T</a><b>T</b>"
        );
        assert_eq!(fill("<!--csrf--><!--csrf-->"), ">TT");
        assert_eq!(fill("<p>no slot</p>"), "><p>no slot</p>");
        assert_eq!(fill(""), ">");
    }

    fn page_tasks(
        views: &Views,
        tasks: &[Task],
        focus: Option<&Focus>,
        csrf: &str,
    ) -> Result<String, AppError> {
        let mut html = String::new();
        push_page_tasks(&mut html, views, tasks, cache_mark(views), focus, csrf)?;
        Ok(html)
    }

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

    fn task_html<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page.find(&format!("id=\"{id}\"")).unwrap();
        let end = page[start..].find("class=\"task__delete\"").unwrap() + start;
        &page[start..end]
    }

    #[test]
    fn a_page_task_carries_each_viewers_own_token_from_one_rendering() {
        let views = Views::new().unwrap();
        let tasks = [hostile_task()];
        let alice = page_tasks(&views, &tasks, None, "alice-token").unwrap();
        let bob = page_tasks(&views, &tasks, None, "bob-token").unwrap();
        // Three forms on a task (toggle, edit, delete): each with the viewer's token.
        assert_eq!(alice.matches("value=\"alice-token\"").count(), 3, "{alice}");
        assert_eq!(bob.matches("value=\"bob-token\"").count(), 3, "{bob}");
        assert!(
            !bob.contains("alice-token") && !bob.contains(TOKEN_SLOT),
            "{bob}"
        );
        assert_eq!(alice.replace("alice-token", "bob-token"), bob);
        // The same markup as rendering the task directly with the token.
        let direct = task(&views, &TaskItem::plain(&tasks[0]), Some("alice-token")).unwrap();
        assert_eq!(alice, direct);
    }

    #[test]
    fn a_changed_task_is_rendered_again_even_with_the_same_id_and_version() {
        let views = Views::new().unwrap();
        let before = hostile_task();
        page_tasks(&views, std::slice::from_ref(&before), None, "t").unwrap();
        // SQLite can hand a deleted task's id to the next one, at the same lock version.
        let after = Task {
            title: "Another task".into(),
            updated_by: "Bob".into(),
            ..before
        };
        let page = page_tasks(&views, &[after], None, "t").unwrap();
        let html = task_html(&page, "task_42");
        assert!(
            html.contains("Another task") && html.contains("Bob"),
            "{html}"
        );
        assert!(!html.contains("script"), "{html}");
    }

    #[test]
    fn user_text_cannot_ask_for_the_token() {
        let views = Views::new().unwrap();
        let task = Task {
            title: TOKEN_SLOT.into(),
            notes: format!("a{TOKEN_SLOT}b"),
            ..hostile_task()
        };
        let page = page_tasks(&views, &[task], None, "secret").unwrap();
        assert_eq!(page.matches("secret").count(), 3, "{page}");
        assert!(page.contains("&lt;!--csrf--&gt;"), "{page}");
    }

    #[test]
    fn the_task_being_edited_shows_the_viewers_form_and_the_others_come_from_the_cache() {
        let views = Views::new().unwrap();
        let other = Task {
            id: TaskId(43),
            title: "Other".into(),
            ..hostile_task()
        };
        let tasks = [hostile_task(), other];
        let focus = Focus {
            task_id: TaskId(42),
            form: FormState::invalid("Title can't be blank", &[("title", "typed")]),
            conflict: false,
        };
        let page = page_tasks(&views, &tasks, Some(&focus), "tok").unwrap();
        let edited = task_html(&page, "task_42");
        assert!(edited.contains("Title can&#x27;t be blank"), "{edited}");
        assert!(edited.contains("value=\"typed\""), "{edited}");
        assert!(task_html(&page, "task_43").contains("Other"));
        assert_eq!(page.matches("value=\"tok\"").count(), 6, "{page}");
    }

    /// A task with the given id and everything else as in [`hostile_task`].
    fn task_numbered(id: i64) -> Task {
        Task {
            id: TaskId(id),
            ..hostile_task()
        }
    }

    #[test]
    fn a_deleted_task_leaves_the_cache() {
        let views = Views::new().unwrap();
        page_tasks(&views, &[task_numbered(1), task_numbered(2)], None, "t").unwrap();
        let both = views.task_fragments.lock().bytes;
        forget(&views, &[TaskId(1)]);
        let cache = views.task_fragments.lock();
        assert!(!cache.entries.contains_key(&TaskId(1)));
        assert!(cache.entries.contains_key(&TaskId(2)));
        assert_eq!(cache.bytes, both / 2);
    }

    /// A page that read its tasks just before one was deleted, and renders after, must not put
    /// the deleted task's markup back: nothing would ever take it out again.
    #[test]
    fn a_page_read_before_a_deletion_does_not_cache_the_deleted_task() {
        let views = Views::new().unwrap();
        let mark = cache_mark(&views);
        forget(&views, &[TaskId(1)]);
        let mut html = String::new();
        let tasks = [task_numbered(1), task_numbered(2)];
        push_page_tasks(&mut html, &views, &tasks, mark, None, "t").unwrap();
        assert_eq!(html.matches("<div id=\"task_").count(), 2, "{html}");
        let cache = views.task_fragments.lock();
        assert!(!cache.entries.contains_key(&TaskId(1)));
        assert!(cache.entries.contains_key(&TaskId(2)));
        drop(cache);

        // A page that read after the deletion is not refused: the deletion does not postdate
        // its mark.
        page_tasks(&views, &tasks[..1], None, "t").unwrap();
        assert!(views.task_fragments.lock().entries.contains_key(&TaskId(1)));
    }

    /// Past the deletions it remembers, the cache refuses markup from any read older than the
    /// ones it forgot, rather than risk keeping a deleted task's.
    #[test]
    fn a_read_older_than_the_deletions_remembered_caches_nothing() {
        let views = Views::new().unwrap();
        let mark = cache_mark(&views);
        for id in 100..(100 + FORGOTTEN_KEPT as i64 + 1) {
            forget(&views, &[TaskId(id)]);
        }
        let mut html = String::new();
        push_page_tasks(&mut html, &views, &[task_numbered(1)], mark, None, "t").unwrap();
        assert!(html.contains("id=\"task_1\""), "{html}");
        assert!(views.task_fragments.lock().entries.is_empty());
        assert_eq!(views.task_fragments.lock().forgotten.len(), FORGOTTEN_KEPT);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let views = Views::new().unwrap();
        let size = task_with_token_slot(&views, &task_numbered(1))
            .unwrap()
            .len();
        let fits = MAX_CACHED_BYTES / size;
        for id in 0..(fits as i64 * 3) {
            page_tasks(&views, &[task_numbered(id)], None, "t").unwrap();
            let cache = views.task_fragments.lock();
            assert!(cache.bytes <= MAX_CACHED_BYTES);
            assert_eq!(
                cache.bytes,
                cache
                    .entries
                    .values()
                    .map(|(_, html)| html.len())
                    .sum::<usize>()
            );
        }
        // The same task again replaces its entry rather than adding one.
        let before = views.task_fragments.lock().bytes;
        let edited = Task {
            title: "x".into(),
            ..task_numbered(0)
        };
        page_tasks(&views, std::slice::from_ref(&edited), None, "t").unwrap();
        page_tasks(&views, &[edited], None, "t").unwrap();
        let cache = views.task_fragments.lock();
        assert!(
            cache.bytes <= before + size,
            "{} > {before} + {size}",
            cache.bytes
        );
    }

    #[test]
    fn broadcast_fragments_carry_no_csrf_token() {
        let views = Views::new().unwrap();
        let stream = updated(&views, &hostile_task(), &RoomCounts::default()).unwrap();
        assert!(!stream.as_str().contains("authenticity_token"));
    }
}
