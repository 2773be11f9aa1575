use reqwest::{StatusCode, header};

use crate::helpers::{TURBO_ACCEPT, location};

crate::backend_tests! {
    async fn the_index_lists_rooms_newest_first_with_their_counts(app: TestApp) {
        app.sign_in("Ada").await;
        let older = app.create_room("Older").await;
        let newer = app.create_room("Newer").await;
        let task = app.create_task(older, "One").await;
        app.create_task(older, "Two").await;
        let lv = app.lock_version(older, task).await;
        let res = app
            .post_turbo(
                &format!("/rooms/{older}/tasks/{task}"),
                &[("_method", "patch"), ("task[done]", "true"), ("task[lock_version]", &lv)],
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);

        let page = app.get_html("/rooms").await;
        let newer_at = page.find(&format!("id=\"room_{newer}\"")).unwrap();
        let older_at = page.find(&format!("id=\"room_{older}\"")).unwrap();
        assert!(newer_at < older_at, "newest first");
        let older_item = &page[older_at..];
        assert!(older_item.contains("1 open · 1 done"), "{older_item}");
    }

    async fn creating_a_room_redirects_to_it(app: TestApp) {
        app.sign_in("Ada").await;
        let id = app.create_room("  Launch plan ").await;
        let page = app.get_html(&format!("/rooms/{id}")).await;
        assert!(page.contains("<h1 class=\"room-header__name\">Launch plan</h1>"), "{page}");
        assert!(page.contains("<div id=\"tasks\""));
        assert!(page.contains("<title id=\"page_title\">Launch plan · tasksync</title>"));
    }

    async fn invalid_room_names_are_refused_with_the_form_again(app: TestApp) {
        app.sign_in("Ada").await;
        let long = "r".repeat(81);
        let res = app.post("/rooms", &[("room[name]", &long)]).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.text().await.unwrap();
        assert!(body.contains("Name is too long (maximum is 80 characters)"));
        assert!(body.contains(&format!("value=\"{long}\"")), "keeps what was typed");

        let res = app.post_turbo("/rooms", &[("room[name]", "")]).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/vnd.turbo-stream.html; charset=utf-8"
        );
        let body = res.text().await.unwrap();
        assert!(body.starts_with("<turbo-stream action=\"replace\" target=\"new_room\">"), "{body}");
        assert!(body.contains("Name can&#x27;t be blank"));
        assert!(!app.get_html("/rooms").await.contains("class=\"rooms__link\""), "no room created");
    }

    async fn renaming_a_room_answers_with_a_stream_or_a_redirect(app: TestApp) {
        let room = app.signed_in_room().await;
        let res = app
            .post_turbo(&format!("/rooms/{room}"), &[("_method", "patch"), ("room[name]", "Renamed")])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.text().await.unwrap();
        assert!(body.starts_with(&format!("<turbo-stream action=\"replace\" target=\"room_{room}\">")));
        assert!(body.contains(">Renamed</h1>"));
        assert!(
            body.contains("<turbo-stream action=\"update\" target=\"page_title\"><template>Renamed · tasksync</template>"),
            "the tab title follows: {body}"
        );

        let res = app
            .post(&format!("/rooms/{room}"), &[("_method", "patch"), ("room[name]", "Again")])
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), format!("/rooms/{room}"));
        assert!(app.get_html(&format!("/rooms/{room}")).await.contains(">Again</h1>"));
    }

    async fn an_invalid_rename_is_refused_and_keeps_the_old_name(app: TestApp) {
        let room = app.signed_in_room().await;
        let res = app
            .post_turbo(&format!("/rooms/{room}"), &[("_method", "patch"), ("room[name]", " ")])
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = res.text().await.unwrap();
        assert!(body.contains("Name can&#x27;t be blank") && body.contains(" open>"), "{body}");

        let res = app
            .post(&format!("/rooms/{room}"), &[("_method", "patch"), ("room[name]", " ")])
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(res.text().await.unwrap().contains(">Launch</h1>"));
    }

    async fn unknown_and_malformed_rooms_are_not_found(app: TestApp) {
        app.sign_in("Ada").await;
        for path in ["/rooms/999999", "/rooms/0", "/rooms/-1", "/rooms/abc", "/rooms/99999999999999999999"] {
            let res = app.get(path).await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
            let body = res.text().await.unwrap();
            assert!(body.contains("The page you were looking for doesn't exist."), "{body}");
        }
        let res = app
            .post("/rooms/999999", &[("_method", "patch"), ("room[name]", "X")])
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = app
            .client
            .get(app.url("/rooms/424242"))
            .header(header::ACCEPT, TURBO_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(res.text().await.unwrap().contains("The page you were looking for doesn't exist."));
    }

    async fn markup_in_room_names_is_shown_as_text(app: TestApp) {
        app.sign_in("Ada").await;
        let room = app.create_room("<script>alert('x')</script>").await;
        let page = app.get_html(&format!("/rooms/{room}")).await;
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2F;script&gt;"));
        let index = app.get_html("/rooms").await;
        assert!(!index.contains("<script>alert"));
    }
}
