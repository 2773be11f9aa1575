use reqwest::StatusCode;

use crate::helpers::{Backend, TestDatabase, postgres_admin_url, spawn_with};

#[tokio::test]
async fn up_answers_200_while_the_database_answers() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = crate::helpers::spawn(backend).await;
        let res = app.get("/up").await;
        assert_eq!(res.status(), StatusCode::OK, "{backend:?}");
        assert!(
            res.headers().get("set-cookie").is_none(),
            "health checks get no session"
        );
    }
}

#[tokio::test]
async fn up_answers_503_when_the_database_is_gone() {
    let (database, url) = TestDatabase::create(Backend::Postgres).await;
    let TestDatabase::Postgres { name } = &database else {
        unreachable!()
    };
    let name = name.clone();
    let app = spawn_with(Backend::Sqlite, |s| s.database_url = Some(url)).await;
    assert_eq!(app.get("/up").await.status(), StatusCode::OK);

    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();

    let res = app.get("/up").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(database);
}
