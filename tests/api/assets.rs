use reqwest::{StatusCode, header};

use crate::helpers::{Backend, asset_url, spawn};

#[tokio::test]
async fn assets_are_fingerprinted_precompressed_and_cached_for_a_year() {
    let app = spawn(Backend::Sqlite).await;
    let page = app.get_html("/session/new").await;
    let css = asset_url(&page, "/assets/application-");
    let turbo = asset_url(&page, "/assets/turbo-");
    assert!(
        css.ends_with(".css") && turbo.ends_with(".js"),
        "{css} {turbo}"
    );

    for (encoding, expected) in [
        ("br", Some("br")),
        ("gzip", Some("gzip")),
        ("identity", None),
        // The client's weights count, not only their order.
        ("gzip;q=1.0, br;q=0.5", Some("gzip")),
        ("br;q=0, gzip", Some("gzip")),
        // No zstd copy is built, and the ETag names the bytes as they are: never zstd on the fly.
        ("zstd", None),
    ] {
        let res = app
            .client
            .get(app.url(&turbo))
            .header(header::ACCEPT_ENCODING, encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let headers = res.headers().clone();
        assert_eq!(
            headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.to_str().unwrap()),
            expected,
            "{encoding}"
        );
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let body = res.bytes().await.unwrap();
        if expected.is_none() {
            assert!(
                String::from_utf8_lossy(&body).contains("Turbo"),
                "serves Turbo itself"
            );
        } else {
            assert!(
                body.len() < 100_000,
                "{encoding} is compressed: {}",
                body.len()
            );
        }
    }

    // Each encoding is its own representation, with its own tag; a browser asking again with
    // the tag it holds (alone, weak or in a list) gets 304 for that encoding only.
    let get = |encoding: &'static str, if_none_match: Option<String>| {
        let mut req = app
            .client
            .get(app.url(&css))
            .header(header::ACCEPT_ENCODING, encoding);
        if let Some(tags) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tags);
        }
        req.send()
    };
    let mut tags = Vec::new();
    for encoding in ["br", "gzip", "identity"] {
        let res = get(encoding, None).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        tags.push(res.headers()[header::ETAG].to_str().unwrap().to_owned());
    }
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    for (encoding, tag) in ["br", "gzip", "identity"].into_iter().zip(&tags) {
        for held in [tag.clone(), format!("W/{tag}"), format!("\"other\", {tag}")] {
            let res = get(encoding, Some(held.clone())).await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{encoding} {held}");
            assert_eq!(res.headers()[header::ETAG], tag.as_str());
            assert_eq!(res.headers()[header::VARY], "Accept-Encoding");
        }
    }
    // The brotli copy's tag does not vouch for the gzip copy.
    let res = get("gzip", Some(tags[0].clone())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        app.get("/assets/application-000000000000.css")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/assets/..%2FCargo.toml").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn html_responses_are_compressed() {
    let app = spawn(Backend::Sqlite).await;
    let res = app
        .client
        .get(app.url("/session/new"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
}
