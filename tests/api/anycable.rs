//! AnyCable's extended protocol (`actioncable-v1-ext-json`) on `/cable`: a session id in the
//! welcome, stream positions on every broadcast, and `history` requests that replay what a
//! client missed, or say plainly that they cannot.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::{
    cable_client::{ACTIONCABLE_PROTOCOLS, Cable, identifier, signed_stream_in},
    helpers::{Backend, TestApp, TestDatabase, spawn, spawn_with, task_title},
    processes::{self, log_line_where},
};

const EXT: &str = "actioncable-v1-ext-json";
const REFRESH: &str = "<turbo-stream action=\"refresh\"></turbo-stream>\n";

/// Connects offering `protocols`, as a browser on the app's own page; returns the socket and
/// its welcome.
async fn connect(app: &TestApp, protocols: &'static str) -> (Cable, Value) {
    let mut cable = Cable::connect_offering(app, protocols).await;
    let welcome = cable.next().await;
    (cable, welcome)
}

async fn connect_ext(app: &TestApp) -> Cable {
    let (cable, welcome) = connect(app, EXT).await;
    assert_eq!(cable.protocol.as_deref(), Some(EXT));
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    cable
}

/// A room, the signed name its page hands out and the page's stream epoch.
struct Room {
    id: i64,
    stream_id: String,
    signed: String,
    epoch: String,
}

async fn room(app: &TestApp) -> Room {
    let id = app.signed_in_room().await;
    let page = app.get_html(&format!("/rooms/{id}")).await;
    let marker = "data-epoch=\"";
    let start = page.find(marker).expect("the page renders its epoch") + marker.len();
    Room {
        id,
        stream_id: format!("rooms:{id}"),
        signed: signed_stream_in(&page),
        epoch: page[start..].split('"').next().unwrap().to_owned(),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every frame but pings that arrives within `wait`.
async fn frames_within(cable: &mut Cable, wait: Duration) -> Vec<Value> {
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(frame) = tokio::time::timeout_at(deadline, cable.next()).await {
        frames.push(frame);
    }
    frames
}

/// The title of the task a broadcast appends.
fn title(frame: &Value) -> &str {
    let html = frame["message"].as_str().expect("a data frame");
    task_title(html).unwrap_or_else(|| panic!("an append: {html}"))
}

fn offset(frame: &Value) -> u64 {
    frame["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset: {frame}"))
}

fn history(identifier: &str, history: Value) -> Value {
    json!({"command": "history", "identifier": identifier, "history": history})
}

fn at(room: &Room, epoch: &str, offset: u64) -> Value {
    json!({"since": unix_seconds(), "streams": {room.stream_id.clone(): {"epoch": epoch, "offset": offset}}})
}

#[tokio::test]
async fn the_extended_protocol_is_selected_when_offered_and_welcomes_with_a_session_id() {
    let app = spawn(Backend::Sqlite).await;
    app.sign_in("Ada").await;
    let mut sids = Vec::new();
    for offer in [EXT, "actioncable-v1-json, actioncable-v1-ext-json"] {
        let (cable, welcome) = connect(&app, offer).await;
        assert_eq!(cable.protocol.as_deref(), Some(EXT), "{offer}");
        assert_eq!(welcome["type"], "welcome");
        assert_eq!(welcome["restored"], false, "sessions are not restored");
        let sid = welcome["sid"].as_str().expect("a session id").to_owned();
        assert!(sid.len() >= 16, "{sid}");
        sids.push(sid);
    }
    assert_ne!(sids[0], sids[1], "one session id per connection");

    // The stock client is answered as it always was.
    let (cable, welcome) = connect(&app, ACTIONCABLE_PROTOCOLS).await;
    assert_eq!(cable.protocol.as_deref(), Some("actioncable-v1-json"));
    assert_eq!(welcome, json!({"type": "welcome"}));
}

#[tokio::test]
async fn broadcasts_carry_their_stream_position_one_offset_apart() {
    let app = spawn(Backend::Sqlite).await;
    let room = room(&app).await;
    let id = identifier(&room.signed);
    let mut ext = connect_ext(&app).await;
    assert_eq!(
        ext.subscribe(&id).await,
        json!({"identifier": id, "type": "confirm_subscription"})
    );
    // A stock client under the same identifier shares the hub's group with it.
    let (mut plain, _) = connect(&app, ACTIONCABLE_PROTOCOLS).await;
    assert_eq!(plain.subscribe(&id).await["type"], "confirm_subscription");

    let titles = ["one", "two", "three"];
    for title in titles {
        app.create_task(room.id, title).await;
    }
    let mut offsets = Vec::new();
    for expected in titles {
        let frame = ext.next().await;
        assert_eq!(frame["identifier"], id);
        assert_eq!(title(&frame), expected);
        assert_eq!(frame["stream_id"], room.stream_id, "{frame}");
        assert_eq!(frame["epoch"], room.epoch, "{frame}");
        offsets.push(offset(&frame));

        let frame = plain.next().await;
        assert_eq!(title(&frame), expected);
        let keys: Vec<&String> = frame.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["identifier", "message"],
            "the stock frame is unchanged"
        );
    }
    assert_eq!(
        offsets,
        [1, 2, 3],
        "one offset per broadcast, counted from the first"
    );
}

#[tokio::test]
async fn a_history_request_after_a_disconnect_replays_exactly_the_missed_messages_then_confirms() {
    let app = spawn(Backend::Sqlite).await;
    let room = room(&app).await;
    let id = identifier(&room.signed);
    let mut cable = connect_ext(&app).await;
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");
    app.create_task(room.id, "one").await;
    let seen = cable.next().await;
    assert_eq!(title(&seen), "one");
    let epoch = seen["epoch"].as_str().unwrap().to_owned();

    drop(cable);
    for title in ["two", "three", "four"] {
        app.create_task(room.id, title).await;
    }

    let mut cable = connect_ext(&app).await;
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");
    cable
        .send(history(&id, at(&room, &epoch, offset(&seen))))
        .await;
    let frames = frames_within(&mut cable, Duration::from_millis(500)).await;
    let (confirm, replayed) = frames.split_last().expect("an answer");
    assert_eq!(
        replayed.iter().map(title).collect::<Vec<_>>(),
        ["two", "three", "four"]
    );
    assert_eq!(replayed.iter().map(offset).collect::<Vec<_>>(), [2, 3, 4]);
    for frame in replayed {
        assert_eq!(frame["stream_id"], room.stream_id);
        assert_eq!(frame["epoch"], epoch);
    }
    assert_eq!(
        *confirm,
        json!({"identifier": id, "type": "confirm_history"})
    );

    // Live again, once each.
    app.create_task(room.id, "five").await;
    let frame = cable.next().await;
    assert_eq!((title(&frame), offset(&frame)), ("five", 5));
    cable.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn history_sent_with_the_subscription_is_replayed_right_after_the_confirmation() {
    let app = spawn(Backend::Sqlite).await;
    let room = room(&app).await;
    let id = identifier(&room.signed);
    let subscribe =
        |history: Value| json!({"command": "subscribe", "identifier": id, "history": history});

    // What @anycable/web sends on its first subscription: no position yet, only a time. The
    // room has never had a message, so nothing can have been missed.
    let mut cable = connect_ext(&app).await;
    cable
        .send(subscribe(json!({"since": unix_seconds()})))
        .await;
    assert_eq!(
        frames_within(&mut cable, Duration::from_millis(300)).await,
        [
            json!({"identifier": id, "type": "confirm_subscription"}),
            json!({"identifier": id, "type": "confirm_history"}),
        ]
    );
    app.create_task(room.id, "one").await;
    let seen = cable.next().await;

    drop(cable);
    for title in ["two", "three"] {
        app.create_task(room.id, title).await;
    }
    let mut cable = connect_ext(&app).await;
    cable
        .send(subscribe(at(&room, &room.epoch, offset(&seen))))
        .await;
    let frames = frames_within(&mut cable, Duration::from_millis(500)).await;
    assert_eq!(frames.len(), 4, "{frames:#?}");
    assert_eq!(frames[0]["type"], "confirm_subscription");
    assert_eq!(
        frames[1..3].iter().map(title).collect::<Vec<_>>(),
        ["two", "three"]
    );
    assert_eq!(frames[3]["type"], "confirm_history");
}

#[tokio::test]
async fn a_stale_epoch_a_position_outside_the_window_or_no_position_is_rejected() {
    let app = spawn_with(Backend::Sqlite, |s| s.history_limit = 3).await;
    let room = room(&app).await;
    let id = identifier(&room.signed);
    let mut cable = connect_ext(&app).await;
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");
    for i in 1..=5 {
        app.create_task(room.id, &format!("task {i}")).await;
        assert_eq!(offset(&cable.next().await), i);
    }
    let refresh = json!({"identifier": id, "message": REFRESH});
    let reject = json!({"identifier": id, "type": "reject_history"});

    // Positions the client may have missed anything after: the page is told to refresh too.
    for (epoch, after, why) in [
        ("an-epoch-that-is-gone", 5, "another epoch"),
        (
            room.epoch.as_str(),
            1,
            "older than the window (3 kept: 3, 4, 5)",
        ),
        (room.epoch.as_str(), 9, "ahead of the stream"),
    ] {
        cable.send(history(&id, at(&room, epoch, after))).await;
        assert_eq!(
            frames_within(&mut cable, Duration::from_millis(300)).await,
            [refresh.clone(), reject.clone()],
            "{why}"
        );
    }

    // No position for this stream (only a time, or other streams'): history is kept by
    // offset, so this cannot be answered, and nothing says the client missed anything.
    for request in [
        json!({"since": unix_seconds()}),
        json!({"streams": {"rooms:999999": {"epoch": room.epoch, "offset": 0}}}),
    ] {
        cable.send(history(&id, request.clone())).await;
        assert_eq!(
            frames_within(&mut cable, Duration::from_millis(300)).await,
            std::slice::from_ref(&reject),
            "{request}"
        );
    }

    // From a position inside the window: what this socket already sent is not sent again.
    cable.send(history(&id, at(&room, &room.epoch, 3))).await;
    assert_eq!(
        frames_within(&mut cable, Duration::from_millis(300)).await,
        [json!({"identifier": id, "type": "confirm_history"})]
    );
}

#[tokio::test]
async fn malformed_history_commands_are_dropped_with_a_logged_reason_and_the_socket_stays_up() {
    // A real process, for its JSON log lines.
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let mut server = processes::start_logging_json(&[("DATABASE_URL", &url)]).await;
    let lines = Arc::new(Mutex::new(Vec::<Value>::new()));
    let mut stdout = BufReader::new(server.child.stdout.take().unwrap()).lines();
    let sink = lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stdout.next_line().await {
            if let Ok(parsed) = serde_json::from_str(&line) {
                sink.lock().unwrap().push(parsed);
            }
        }
    });
    let app = TestApp::at(server.address.clone(), Backend::Sqlite, Arc::new(database));
    let room = room(&app).await;
    let id = identifier(&room.signed);
    let mut cable = connect_ext(&app).await;
    assert_eq!(cable.subscribe(&id).await["type"], "confirm_subscription");

    let malformed = [
        json!({"command": "history", "identifier": id}),
        history(&id, json!(null)),
        history(&id, json!([])),
        history(&id, json!({})),
        history(&id, json!({"since": "yesterday"})),
        history(&id, json!({"since": -5})),
        history(
            &id,
            json!({"streams": {room.stream_id.clone(): {"epoch": room.epoch}}}),
        ),
        history(
            &id,
            json!({"streams": {room.stream_id.clone(): {"epoch": room.epoch, "offset": "1"}}}),
        ),
    ];
    for command in &malformed {
        cable.send(command.clone()).await;
    }
    // Well formed, but for a subscription this socket does not hold.
    let stranger =
        json!({"channel": "Turbo::StreamsChannel", "signed_stream_name": room.signed, "n": 1})
            .to_string();
    cable
        .send(history(&stranger, json!({"since": unix_seconds()})))
        .await;
    // A subscription stands even when the history sent with it is malformed.
    cable
        .send(json!({"command": "subscribe", "identifier": stranger, "history": {"since": "x"}}))
        .await;
    assert_eq!(
        cable.next().await,
        json!({"identifier": stranger, "type": "confirm_subscription"})
    );

    app.create_task(room.id, "Still here").await;
    let frames = frames_within(&mut cable, Duration::from_millis(500)).await;
    assert_eq!(
        frames.len(),
        2,
        "only the broadcast, once per subscription: {frames:#?}"
    );
    for frame in &frames {
        assert_eq!(title(frame), "Still here");
    }

    let _ = log_line_where(&lines, |l| {
        l["fields"]["message"] == "ignoring the history asked with a subscription"
            && l["fields"]["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("malformed history request"))
    })
    .await;
    let _ = log_line_where(&lines, |l| {
        l["fields"]["message"]
            == "ignoring a history request for a subscription this socket does not hold"
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reasons: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["fields"]["message"] == "ignoring a cable frame")
            .filter_map(|l| l["fields"]["error"].as_str())
            .filter(|e| e.starts_with("malformed history request: "))
            .map(str::to_owned)
            .collect();
        if reasons.len() == malformed.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} malformed requests, {} logged reasons: {reasons:#?}",
            malformed.len(),
            reasons.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = server.child.kill().await;
}
