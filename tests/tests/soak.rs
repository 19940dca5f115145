//! The random-kill soak: clients launch (top-level containers, pod members
//! nested in them, execs into them), destroy and remove containers
//! concurrently through `berth agent` while the agent is SIGKILLed at
//! random moments and restarted. At the end every container is accounted
//! for and, once all are destroyed and removed, nothing is leaked.
//!
//! `BERTH_SOAK_KILLS=N` (default 50) sets the number of kills; a longer
//! run: `BERTH_SOAK_KILLS=500 cargo test -p berth-tests --test soak -- --nocapture`.

use berth::agent::api::{
    exec_input, ContainerRef, ExecInput, ExecRequest, LaunchRequest, ListRequest,
};
use berth::{ContainerConfig, ContainerId, ContainerState};
use berth_tests::TestEnv;
use rand::Rng;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Book {
    /// Launch requests sent (the container may or may not exist).
    sent: BTreeSet<String>,
    /// Launches the agent confirmed.
    launched: BTreeSet<String>,
    /// Remove requests sent (the agent may have died before answering).
    remove_sent: BTreeSet<String>,
    /// Removes the agent confirmed (the container is gone for good).
    removed: BTreeSet<String>,
    destroys: usize,
}

fn config(rng: &mut impl Rng) -> ContainerConfig {
    let script = match rng.gen_range(0..3) {
        0 => "exit 3",
        1 => "sleep 0.2",
        _ => "sleep 1000",
    };
    ContainerConfig {
        command: vec![script.into()],
        shell: true,
        ..Default::default()
    }
}

/// One client: random launches, destroys and removes until its calls fail
/// (the agent was killed).
async fn client(socket: std::path::PathBuf, book: Arc<Mutex<Book>>, round: usize, worker: usize) {
    let Ok(mut c) = berth::agent::connect(&socket).await else {
        return;
    };
    let mut n = 0;
    loop {
        let op = rand::thread_rng().gen_range(0..100);
        let known: Vec<String> = {
            let b = book.lock().unwrap();
            b.sent.difference(&b.removed).cloned().collect()
        };
        let pick = |known: &[String]| {
            (!known.is_empty()).then(|| known[rand::thread_rng().gen_range(0..known.len())].clone())
        };
        let top: Vec<String> = known.iter().filter(|k| !k.contains('/')).cloned().collect();
        let r = if op < 50 || top.is_empty() {
            // A top-level container, or (one in five) a pod member.
            let member = op % 5 == 0 && !top.is_empty();
            let id = match member {
                true => format!("{}/m{round}-{worker}-{n}", pick(&top).unwrap()),
                false => format!("s{round}-{worker}-{n}"),
            };
            n += 1;
            let mut cfg = config(&mut rand::thread_rng());
            cfg.share_pid_namespace = member && op % 2 == 0;
            book.lock().unwrap().sent.insert(id.clone());
            let r = c
                .launch(LaunchRequest {
                    id: Some(ContainerId::parse(&id).unwrap()),
                    config: Some(cfg),
                })
                .await;
            if r.is_ok() {
                book.lock().unwrap().launched.insert(id);
            }
            r.map(|_| ())
        } else if op < 55 {
            // An exec into a container, its stream dropped at once or read
            // to its end.
            let id = pick(&top).unwrap();
            let start = ExecInput {
                input: Some(exec_input::Input::Start(ExecRequest {
                    id: Some(ContainerId::parse(&id).unwrap()),
                    command: vec!["sleep".into(), "0.1".into()],
                    ..Default::default()
                })),
            };
            match c.exec(futures::stream::iter([start])).await {
                Ok(r) if op % 2 == 0 => {
                    let mut out = r.into_inner();
                    loop {
                        match out.message().await {
                            Ok(Some(_)) => {}
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        } else if op < 85 {
            let id = pick(&known).unwrap();
            let r = c
                .destroy(ContainerRef {
                    id: Some(ContainerId::parse(&id).unwrap()),
                })
                .await;
            if r.is_ok() {
                book.lock().unwrap().destroys += 1;
            }
            r.map(|_| ())
        } else {
            let id = pick(&known).unwrap();
            book.lock().unwrap().remove_sent.insert(id.clone());
            let r = c
                .remove(ContainerRef {
                    id: Some(ContainerId::parse(&id).unwrap()),
                })
                .await;
            if r.is_ok() {
                book.lock().unwrap().removed.insert(id);
            }
            r.map(|_| ())
        };
        if let Err(e) = r {
            // Refusals (unknown, not terminated yet) are part of the game;
            // a broken connection means the agent is gone.
            if matches!(
                e.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ) {
                return;
            }
        }
    }
}

#[test]
fn random_agent_kills_lose_no_container_and_leak_nothing() {
    let kills: usize = std::env::var("BERTH_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let env = TestEnv::new("soak");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let book = Arc::new(Mutex::new(Book::default()));
    let started = Instant::now();
    for round in 0..kills {
        let agent = env.start_agent("");
        let workers: Vec<_> = (0..4)
            .map(|w| rt.spawn(client(env.socket(), book.clone(), round, w)))
            .collect();
        let pause = rand::thread_rng().gen_range(20..400);
        std::thread::sleep(Duration::from_millis(pause));
        agent.kill9();
        for w in workers {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), w)
                    .await
                    .expect("a client hangs on a dead agent")
                    .unwrap()
            });
        }
    }

    // Recover, account for everything, then destroy and remove it all.
    let agent = env.start_agent("");
    let book = book.lock().unwrap();
    let listed = rt.block_on(async {
        let mut c = berth::agent::connect(&env.socket()).await.unwrap();
        let list = c
            .list(ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .containers;
        for s in &list {
            let id = s.id.clone().unwrap();
            let state = ContainerState::try_from(s.state).unwrap();
            assert!(
                matches!(
                    state,
                    ContainerState::Running
                        | ContainerState::Destroying
                        | ContainerState::Terminated
                ),
                "{id} recovered in {state:?}"
            );
            c.destroy(ContainerRef {
                id: Some(id.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("destroy {id}: {e}"));
        }
        // Top-level removes take their nested containers with them.
        for s in list
            .iter()
            .filter(|s| s.id.as_ref().unwrap().parent.is_none())
        {
            c.remove(ContainerRef { id: s.id.clone() }).await.unwrap();
        }
        list.into_iter()
            .map(|s| s.id.unwrap().to_string())
            .collect::<BTreeSet<String>>()
    });
    // Every confirmed launch is still there unless a remove was asked for
    // (confirmed, or cut off by the kill after it took effect); nothing
    // appears that was never asked for.
    // A remove takes the nested containers with it.
    let removed_with = |id: &str| {
        let parts: Vec<&str> = id.split('/').collect();
        (1..=parts.len()).any(|n| book.remove_sent.contains(&parts[..n].join("/")))
    };
    let missing: Vec<_> = book
        .launched
        .iter()
        .filter(|id| !removed_with(id) && !listed.contains(*id))
        .collect();
    assert!(missing.is_empty(), "lost containers: {missing:?}");
    // Execs are the agent's own DEBUG containers.
    let unknown: Vec<_> = listed
        .difference(&book.sent)
        .filter(|id| !id.contains("/exec-"))
        .collect();
    assert!(
        unknown.is_empty(),
        "containers nobody launched: {unknown:?}"
    );
    assert!(agent.terminate().success());

    let mut leaks = env.leaks();
    for dir in [
        env.state_dir.join("sandboxes"),
        env.runtime_dir.join("containers"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let files: Vec<String> = std::fs::read_dir(e.path())
                        .map(|d| {
                            d.flatten()
                                .map(|f| f.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    let name = e.file_name().to_string_lossy().into_owned();
                    leaks.push(format!(
                        "dir {} holding {files:?} (launch sent: {}, confirmed: {}, remove sent: {}, listed at the end: {})",
                        e.path().display(),
                        book.sent.contains(&name),
                        book.launched.contains(&name),
                        book.remove_sent.contains(&name),
                        listed.contains(&name),
                    ));
                }
            }
        }
    }
    println!(
        "soak: {kills} agent kills in {:.1} s; {} launches sent, {} confirmed; {} destroys confirmed; {} removed during the run; {} recovered at the end ({} pod members, {} execs); leaks = {}",
        started.elapsed().as_secs_f64(),
        book.sent.len(),
        book.launched.len(),
        book.destroys,
        book.removed.len(),
        listed.len(),
        listed
            .iter()
            .filter(|i| i.contains('/') && !i.contains("/exec-"))
            .count(),
        listed.iter().filter(|i| i.contains("/exec-")).count(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "leaked: {leaks:#?}");
}
