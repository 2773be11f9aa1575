//! Spawns the real server on a random port, against a fresh database, and speaks HTTP to it.

use std::sync::Arc;

use reqwest::{Client, Response, StatusCode, cookie::CookieStore as _, cookie::Jar, header};
use tasksync::{
    config::{Environment, Settings},
    startup::Application,
};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the test suite creates its PostgreSQL databases: `TEST_DATABASE_URL`, or the local
/// server as the `postgres` user.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A database that exists for one test and is dropped after it.
pub enum TestDatabase {
    /// The folder holding the SQLite file, removed with it.
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        name: String,
    },
    /// A database on a private server the test runs itself, which goes when the server does.
    Private,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> (Self, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.sqlite3", dir.path().display());
                (Self::Sqlite { _dir: dir }, url)
            }
            Backend::Postgres => {
                let name = format!("tasksync_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut conn = connect_admin(&admin).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await
                    .expect("CREATE DATABASE");
                let url = match admin.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => panic!("TEST_DATABASE_URL has no database name: {admin}"),
                };
                (Self::Postgres { name }, url)
            }
        }
    }
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required for these tests and is not reachable at {url}: {e}. \
             Start it (see README) or set TEST_DATABASE_URL."
        )
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Self::Postgres { name } = self {
            let name = name.clone();
            // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let mut conn = connect_admin(&postgres_admin_url()).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                });
            })
            .join();
        }
    }
}

/// Settings for a test server: random port, one worker, a fixed secret.
pub fn test_settings(database_url: String) -> Settings {
    let mut settings = Settings::load(Environment::Test).expect("test settings");
    settings.port = 0;
    settings.workers = 1;
    settings.database_url = Some(database_url);
    settings.database_pool_size = 5;
    settings.secret_key_base = Some("test-secret-0123456789abcdef0123456789abcdef".into());
    settings
}

/// A running server and a browser-like client with its own cookie jar.
pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub jar: Arc<Jar>,
    pub backend: Backend,
    _database: Arc<TestDatabase>,
}

pub async fn spawn(backend: Backend) -> TestApp {
    spawn_with(backend, |_| {}).await
}

pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (database, url) = TestDatabase::create(backend).await;
    let mut settings = test_settings(url);
    configure(&mut settings);
    let app = Application::build(&settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp::at(address, backend, Arc::new(database))
}

pub fn new_client() -> Client {
    new_client_with_jar().0
}

fn new_client_with_jar() -> (Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    (client, jar)
}

pub const TURBO_ACCEPT: &str = "text/vnd.turbo-stream.html, text/html, application/xhtml+xml";

/// The fingerprinted URL of an asset, as the layout references it.
pub fn asset_url(html: &str, prefix: &str) -> String {
    let start = html
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} in layout"));
    html[start..].split('"').next().unwrap().to_owned()
}

/// Pulls `<meta name="csrf-token" content="...">` out of a page.
pub fn csrf_from(html: &str) -> String {
    let marker = "name=\"csrf-token\" content=\"";
    let start = html.find(marker).expect("page has a csrf-token meta tag") + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub fn location(res: &Response) -> String {
    res.headers()
        .get(header::LOCATION)
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_owned()
}

impl TestApp {
    /// A client for a server already running at `address` on `database`.
    pub fn at(address: String, backend: Backend, database: Arc<TestDatabase>) -> TestApp {
        let (client, jar) = new_client_with_jar();
        TestApp {
            address,
            client,
            jar,
            backend,
            _database: database,
        }
    }

    /// Another person on the same server, with a cookie jar of their own.
    pub fn new_visitor(&self) -> TestApp {
        TestApp::at(self.address.clone(), self.backend, self._database.clone())
    }

    /// Another person on the same server, signed in as `name`.
    pub async fn new_visitor_signed_in(&self, name: &str) -> TestApp {
        let visitor = self.new_visitor();
        visitor.sign_in(name).await;
        visitor
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The `Cookie` header this client would send, for WebSocket handshakes.
    pub fn cookie_header(&self) -> Option<String> {
        let url = self.address.parse().expect("address is a URL");
        self.jar
            .cookies(&url)
            .map(|v| v.to_str().expect("ASCII cookie").to_owned())
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn get_html(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.text().await.unwrap()
    }

    /// A fresh CSRF token for this client's session.
    pub async fn csrf(&self) -> String {
        csrf_from(&self.get_html("/session/new").await)
    }

    /// Posts a form as a browser without JavaScript would, with a valid CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_as(path, fields, None).await
    }

    /// Posts a form as Turbo does: asking for a turbo-stream.
    pub async fn post_turbo(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_as(path, fields, Some(TURBO_ACCEPT)).await
    }

    async fn post_as(&self, path: &str, fields: &[(&str, &str)], accept: Option<&str>) -> Response {
        let token = self.csrf().await;
        let mut form: Vec<(&str, &str)> = vec![("authenticity_token", &token)];
        form.extend_from_slice(fields);
        self.post_raw(path, &form, accept).await
    }

    /// Posts exactly these fields, with no token added.
    pub async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        accept: Option<&str>,
    ) -> Response {
        let mut req = self.client.post(self.url(path)).form(fields);
        if let Some(accept) = accept {
            req = req.header(header::ACCEPT, accept);
        }
        req.send().await.expect("POST")
    }

    pub async fn sign_in(&self, name: &str) {
        let res = self.post("/session", &[("name", name)]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "sign in as {name}");
    }

    /// Creates a room and returns its id.
    pub async fn create_room(&self, name: &str) -> i64 {
        let res = self.post("/rooms", &[("room[name]", name)]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "create room {name}");
        location(&res)
            .strip_prefix("/rooms/")
            .and_then(|id| id.parse().ok())
            .expect("redirect to the new room")
    }

    /// Adds a task through Turbo and returns its id, read from the appended fragment.
    pub async fn create_task(&self, room: i64, title: &str) -> i64 {
        let res = self
            .post_turbo(&format!("/rooms/{room}/tasks"), &[("task[title]", title)])
            .await;
        assert_eq!(res.status(), StatusCode::OK, "create task {title}");
        let body = res.text().await.unwrap();
        task_id_in(&body).expect("appended task has an id")
    }

    /// A signed-in client in a room, ready to work.
    pub async fn signed_in_room(&self) -> i64 {
        self.sign_in("Ada").await;
        self.create_room("Launch").await
    }

    /// The ids of the tasks the room page shows, in order.
    pub async fn task_ids(&self, room: i64) -> Vec<i64> {
        let html = self.get_html(&format!("/rooms/{room}")).await;
        let list = html.split("id=\"tasks\"").nth(1).expect("task list");
        let mut ids = Vec::new();
        let mut rest = list;
        while let Some(pos) = rest.find("<div id=\"task_") {
            rest = &rest[pos + "<div id=\"task_".len()..];
            ids.push(rest.split('"').next().unwrap().parse().unwrap());
        }
        ids
    }

    /// The lock version the room page shows for a task.
    pub async fn lock_version(&self, room: i64, task: i64) -> String {
        let html = self.get_html(&format!("/rooms/{room}")).await;
        let part = html
            .split(&format!("<div id=\"task_{task}\""))
            .nth(1)
            .expect("task on page");
        let marker = "name=\"task[lock_version]\" value=\"";
        let start = part.find(marker).unwrap() + marker.len();
        part[start..].split('"').next().unwrap().to_owned()
    }
}

/// The first `task_N` id in an HTML fragment.
pub fn task_id_in(html: &str) -> Option<i64> {
    let start = html.find("<div id=\"task_")? + "<div id=\"task_".len();
    html[start..].split('"').next()?.parse().ok()
}

/// The title of the first task in an HTML fragment.
pub fn task_title(html: &str) -> Option<&str> {
    const MARKER: &str = "<p class=\"task__title\">";
    let start = html.find(MARKER)? + MARKER.len();
    html[start..].split('<').next()
}

/// Runs each test body once per backend: `mod sqlite` and `mod postgres` each get a test.
#[macro_export]
macro_rules! backend_tests {
    ($(async fn $name:ident($app:ident: TestApp) $body:block)*) => {
        $(
            async fn $name($app: $crate::helpers::TestApp) $body
        )*
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn($crate::helpers::Backend::Sqlite).await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::spawn($crate::helpers::Backend::Postgres).await).await
                }
            )*
        }
    };
}
