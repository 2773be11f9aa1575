//! Three server processes on different ports and one PostgreSQL database, as several processes
//! or machines behind a load balancer would run: a change made through each one reaches the
//! cable subscribers of the other two (and its own), with no sticky sessions.

use crate::{
    cable_client::{Cable, identifier, signed_stream_in},
    helpers::TestApp,
    processes::Cluster,
};

/// Reads frames until a broadcast mentions `text`; panics if none does in time.
async fn until_broadcast(cable: &mut Cable, text: &str) {
    loop {
        let frame = cable.next().await;
        if frame["message"].as_str().is_some_and(|m| m.contains(text)) {
            return;
        }
    }
}

#[tokio::test]
async fn a_change_through_each_of_three_processes_reaches_the_subscribers_of_the_others() {
    let cluster = Cluster::new(&[]).await;
    let servers = [
        cluster.start().await,
        cluster.start().await,
        cluster.start().await,
    ];
    let ports: std::collections::HashSet<_> = servers.iter().map(|s| &s.address).collect();
    assert_eq!(ports.len(), 3, "three different ports");

    let people: Vec<TestApp> = servers.iter().map(|s| cluster.client(&s.address)).collect();
    let room = people[0].signed_in_room().await;
    let mut cables = Vec::new();
    for (i, person) in people.iter().enumerate() {
        if i > 0 {
            person.sign_in(&format!("Person {i}")).await;
        }
        // Each process renders (and signs) the page its own visitor sees.
        let signed = signed_stream_in(&person.get_html(&format!("/rooms/{room}")).await);
        cables.push(Cable::subscribed(person, &identifier(&signed)).await);
    }

    for (i, person) in people.iter().enumerate() {
        let title = format!("Made through process {i}");
        person.create_task(room, &title).await;
        for (j, cable) in cables.iter_mut().enumerate() {
            tokio::time::timeout(
                crate::cable_client::WAIT * 2,
                until_broadcast(cable, &title),
            )
            .await
            .unwrap_or_else(|_| panic!("a subscriber on process {j} missed {title:?}"));
        }
    }
    for server in &servers {
        assert_eq!(server.up().await["status"], "ok");
    }
}
