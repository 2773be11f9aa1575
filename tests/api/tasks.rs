use reqwest::{StatusCode, header};

use crate::helpers::{Backend, location, spawn_with, task_id_in};

const STREAM: &str = "text/vnd.turbo-stream.html; charset=utf-8";

crate::backend_tests! {
    async fn adding_a_task_through_turbo_appends_it_and_resets_the_form(app: TestApp) {
        let room = app.signed_in_room().await;
        let res = app
            .post_turbo(
                &format!("/rooms/{room}/tasks"),
                &[("task[title]", " Write the plan "), ("task[notes]", "line one\r\nline two")],
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_TYPE], STREAM);
        let body = res.text().await.unwrap();
        let id = task_id_in(&body).unwrap();
        let actions: Vec<&str> = body.split("<turbo-stream ").skip(1).collect();
        assert_eq!(actions.len(), 3, "{body}");
        assert!(actions[0].starts_with("action=\"append\" target=\"tasks\"><template>"));
        assert!(actions[0].contains(&format!("<div id=\"task_{id}\"")));
        assert!(actions[0].contains(">Write the plan</p>"));
        assert!(body.contains(&format!("target=\"counts_room_{room}\"")));
        assert!(body.contains("1 open · 0 done"));
        assert!(body.contains("<turbo-stream action=\"replace\" target=\"new_task\">"));

        assert_eq!(app.task_ids(room).await, vec![id]);
        let page = app.get_html(&format!("/rooms/{room}")).await;
        assert!(page.contains("line one\nline two"), "notes keep their line breaks");
        assert!(page.contains("Last changed by Ada"));
    }

    async fn adding_a_task_without_javascript_redirects_to_the_room(app: TestApp) {
        let room = app.signed_in_room().await;
        let res = app.post(&format!("/rooms/{room}/tasks"), &[("task[title]", "Plain")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), format!("/rooms/{room}"));
        assert!(app.get_html(&format!("/rooms/{room}")).await.contains(">Plain</p>"));
    }

    async fn invalid_tasks_are_refused_with_the_form_and_what_was_typed(app: TestApp) {
        let room = app.signed_in_room().await;
        let path = format!("/rooms/{room}/tasks");
        let long_notes = "n".repeat(10_001);
        for (title, notes, reason) in [
            ("", "", "Title can&#x27;t be blank"),
            (&*"t".repeat(201), "", "Title is too long (maximum is 200 characters)"),
            ("ok", &*long_notes, "Notes is too long (maximum is 10000 characters)"),
            ("nul\u{0}", "", "Title contains control characters"),
        ] {
            let res = app.post_turbo(&path, &[("task[title]", title), ("task[notes]", notes)]).await;
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{reason}");
            let body = res.text().await.unwrap();
            assert!(body.starts_with("<turbo-stream action=\"replace\" target=\"new_task\">"));
            assert!(body.contains(reason), "{reason}: {body}");
        }
        let res = app.post(&path, &[("task[title]", " "), ("task[notes]", "keep me")]).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = res.text().await.unwrap();
        assert!(page.contains("Title can&#x27;t be blank"));
        assert!(page.contains(">keep me</textarea>"), "typed notes survive");
        assert!(app.task_ids(room).await.is_empty());
    }

    async fn editing_a_task_replaces_it_and_bumps_its_lock_version(app: TestApp) {
        let room = app.signed_in_room().await;
        let task = app.create_task(room, "Draft").await;
        let res = app
            .post_turbo(
                &format!("/rooms/{room}/tasks/{task}"),
                &[
                    ("_method", "patch"),
                    ("task[title]", "Final"),
                    ("task[notes]", "Checked twice"),
                    ("task[lock_version]", "0"),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.text().await.unwrap();
        assert!(body.starts_with(&format!("<turbo-stream action=\"replace\" target=\"task_{task}\">")));
        assert!(body.contains(">Final</p>") && body.contains(">Checked twice</p>"));
        assert_eq!(app.lock_version(room, task).await, "1");
    }

    async fn toggling_carries_the_target_state_and_a_repeat_is_harmless(app: TestApp) {
        let room = app.signed_in_room().await;
        let task = app.create_task(room, "Toggle me").await;
        let path = format!("/rooms/{room}/tasks/{task}");
        let done = [("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "0")];
        let res = app.post_turbo(&path, &done).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.text().await.unwrap();
        assert!(body.contains("task task--done"));
        assert!(body.contains("0 open · 1 done"));
        // The same click again, with the version the page had: already done, nothing changes.
        let res = app.post_turbo(&path, &done).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.text().await.unwrap().contains("task task--done"));
        assert_eq!(app.lock_version(room, task).await, "1");

        let res = app
            .post(&path, &[("_method", "patch"), ("task[done]", "false"), ("task[lock_version]", "1")])
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let page = app.get_html(&format!("/rooms/{room}")).await;
        assert!(!page.contains("task--done"));
        assert!(page.contains("1 open · 0 done"));
    }

    async fn a_stale_edit_is_refused_with_the_task_as_it_is_now_and_who_changed_it(app: TestApp) {
        let room = app.signed_in_room().await;
        let task = app.create_task(room, "Original").await;
        let path = format!("/rooms/{room}/tasks/{task}");

        let grace = app.new_visitor_signed_in("Grace").await;
        let res = grace
            .post_turbo(&path, &[("_method", "patch"), ("task[title]", "Grace's"), ("task[lock_version]", "0")])
            .await;
        assert_eq!(res.status(), StatusCode::OK);

        let res = app
            .post_turbo(&path, &[("_method", "patch"), ("task[title]", "Ada's"), ("task[notes]", ""), ("task[lock_version]", "0")])
            .await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let body = res.text().await.unwrap();
        assert!(body.contains("Grace changed this task while you were working on it"), "{body}");
        assert!(body.contains(">Grace&#x27;s</p>"), "shows the task as it is now");
        assert!(body.contains("value=\"Ada&#x27;s\""), "keeps the refused edit in the form");
        assert!(body.contains("name=\"task[lock_version]\" value=\"1\""));

        let stale_toggle = [("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "0")];
        let res = app.post(&path, &stale_toggle).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert!(res.text().await.unwrap().contains("Grace changed this task"));

        let page = app.get_html(&format!("/rooms/{room}")).await;
        assert!(page.contains(">Grace&#x27;s</p>") && !page.contains("task--done"), "nothing changed");
    }

    async fn an_invalid_edit_is_refused_and_keeps_what_was_typed(app: TestApp) {
        let room = app.signed_in_room().await;
        let task = app.create_task(room, "Keep").await;
        let path = format!("/rooms/{room}/tasks/{task}");
        let fields = [("_method", "patch"), ("task[title]", ""), ("task[notes]", "typed"), ("task[lock_version]", "0")];
        let res = app.post_turbo(&path, &fields).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.text().await.unwrap();
        assert!(body.contains("Title can&#x27;t be blank") && body.contains(">typed</textarea>"));
        let res = app.post(&path, &fields).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.text().await.unwrap().contains("Title can&#x27;t be blank"));
        assert_eq!(app.lock_version(room, task).await, "0");
    }

    async fn malformed_edit_fields_are_bad_requests(app: TestApp) {
        let room = app.signed_in_room().await;
        let task = app.create_task(room, "Target").await;
        let path = format!("/rooms/{room}/tasks/{task}");
        for fields in [
            vec![("_method", "patch"), ("task[done]", "true")],
            vec![("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "x")],
            vec![("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "-1")],
            vec![("_method", "patch"), ("task[done]", "maybe"), ("task[lock_version]", "0")],
            vec![("_method", "patch"), ("task[lock_version]", "0")],
        ] {
            let res = app.post_turbo(&path, &fields).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{fields:?}");
        }
        assert_eq!(app.lock_version(room, task).await, "0");
    }

    async fn deleting_a_task_removes_it(app: TestApp) {
        let room = app.signed_in_room().await;
        let keep = app.create_task(room, "Keep").await;
        let task = app.create_task(room, "Drop").await;
        let path = format!("/rooms/{room}/tasks/{task}");
        let res = app.post_turbo(&path, &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.text().await.unwrap();
        assert!(body.starts_with(&format!("<turbo-stream action=\"remove\" target=\"task_{task}\"></turbo-stream>")));
        assert!(body.contains("1 open · 0 done"));
        assert_eq!(app.task_ids(room).await, vec![keep]);
        let res = app.post_turbo(&path, &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "already gone");
        let res = app.post(&format!("/rooms/{room}/tasks/{keep}"), &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert!(app.task_ids(room).await.is_empty());
    }

    async fn clearing_completed_removes_every_done_task_in_one_response(app: TestApp) {
        let room = app.signed_in_room().await;
        let mut done = Vec::new();
        for title in ["a", "b", "c"] {
            let id = app.create_task(room, title).await;
            let res = app
                .post_turbo(&format!("/rooms/{room}/tasks/{id}"), &[("_method", "patch"), ("task[done]", "1"), ("task[lock_version]", "0")])
                .await;
            assert_eq!(res.status(), StatusCode::OK);
            done.push(id);
        }
        let open = app.create_task(room, "open").await;
        let res = app.post_turbo(&format!("/rooms/{room}/tasks/completed"), &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.text().await.unwrap();
        for id in &done {
            assert!(body.contains(&format!("<turbo-stream action=\"remove\" target=\"task_{id}\">")));
        }
        assert!(body.contains("1 open · 0 done"));
        assert_eq!(app.task_ids(room).await, vec![open]);
        let res = app.post(&format!("/rooms/{room}/tasks/completed"), &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "clearing nothing is fine");
    }

    async fn tasks_are_only_reachable_through_their_own_room(app: TestApp) {
        let room = app.signed_in_room().await;
        let other = app.create_room("Other").await;
        let task = app.create_task(room, "Mine").await;
        for (path, fields) in [
            (format!("/rooms/{other}/tasks/{task}"), vec![("_method", "delete")]),
            (format!("/rooms/{other}/tasks/{task}"), vec![("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", "0")]),
            (format!("/rooms/{room}/tasks/0"), vec![("_method", "delete")]),
            (format!("/rooms/{room}/tasks/nope"), vec![("_method", "delete")]),
            ("/rooms/999999/tasks".to_owned(), vec![("task[title]", "x")]),
            ("/rooms/999999/tasks/completed".to_owned(), vec![("_method", "delete")]),
        ] {
            let res = app.post_turbo(&path, &fields).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path} {fields:?}");
        }
        assert_eq!(app.task_ids(room).await, vec![task]);
    }

    async fn signed_out_visitors_cannot_change_tasks(app: TestApp) {
        let room = app.signed_in_room().await;
        let task = app.create_task(room, "Safe").await;
        let stranger = app.new_visitor();
        let res = stranger.post_turbo(&format!("/rooms/{room}/tasks/{task}"), &[("_method", "delete")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), "/session/new");
        assert_eq!(app.task_ids(room).await, vec![task]);
    }
}

#[tokio::test]
async fn a_full_room_refuses_more_tasks_with_a_clear_message() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = spawn_with(backend, |s| s.max_tasks_per_room = 2).await;
        let room = app.signed_in_room().await;
        app.create_task(room, "one").await;
        app.create_task(room, "two").await;
        let res = app
            .post_turbo(&format!("/rooms/{room}/tasks"), &[("task[title]", "three")])
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.text().await.unwrap();
        assert!(
            body.contains("This room is full: it holds the maximum of 2 tasks."),
            "{body}"
        );
        assert_eq!(app.task_ids(room).await.len(), 2, "{backend:?}");
    }
}
