//! The agent's image calls over gRPC: import a umoci-made layout, list it,
//! launch a container from it, remove it; bad requests get clear errors.

use berth::agent::api::{
    ContainerRef, Empty, ImageRef, ImportImageRequest, LaunchRequest, PullImageRequest,
};
use berth::{ContainerConfig, ContainerId};
use berth_tests::TestEnv;
use tonic::Code;

#[actix_rt::test]
async fn images_are_imported_listed_run_and_removed_over_the_api() {
    let env = TestEnv::new("ag-images");
    let layout = berth_tests::busybox_layout(&env);
    let agent = env.start_agent("");
    let mut api = berth::agent::connect(&env.socket()).await.unwrap();

    let imported = api
        .import_image(ImportImageRequest {
            path: layout.display().to_string(),
            name: "api-busybox".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()))
        .into_inner()
        .images;
    assert_eq!(imported.len(), 1, "{imported:?}");
    let reference = imported[0].reference.clone();
    assert!(reference.ends_with("api-busybox:latest"), "{reference}");
    assert!(imported[0].manifest.starts_with("sha256:"), "{imported:?}");

    let listed = api.list_images(Empty {}).await.unwrap().into_inner().images;
    let row = listed
        .iter()
        .find(|i| i.reference == reference)
        .unwrap_or_else(|| panic!("{reference} not in {listed:?}"));
    assert_eq!(row.layers, 1);
    assert!(row.size > 0);

    // A container from the imported image.
    let id = ContainerId::new("from-image");
    api.launch(LaunchRequest {
        id: Some(id.clone()),
        config: Some(ContainerConfig {
            image: reference.clone(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            ..Default::default()
        }),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let t = api
        .wait(ContainerRef {
            id: Some(id.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.exit_code, 3, "{t:?}");
    api.remove(ContainerRef { id: Some(id) }).await.unwrap();

    api.remove_image(ImageRef {
        reference: reference.clone(),
    })
    .await
    .unwrap();
    let listed = api.list_images(Empty {}).await.unwrap().into_inner().images;
    assert!(
        listed.iter().all(|i| i.reference != reference),
        "{listed:?}"
    );
    let e = api
        .remove_image(ImageRef {
            reference: reference.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("no such image"), "{e}");

    // Bad requests name what was wrong.
    let e = api
        .import_image(ImportImageRequest {
            path: "relative/layout".into(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("must be absolute"), "{e}");
    let missing = env.path("no-such-layout");
    let e = api
        .import_image(ImportImageRequest {
            path: missing.display().to_string(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("no-such-layout"), "{e}");
    // Nothing listens on port 1: the pull fails and names the registry.
    let e = api
        .pull_image(PullImageRequest {
            reference: "127.0.0.1:1/nothing:latest".into(),
            insecure: false,
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("127.0.0.1:1"), "{e:?}");
    drop(agent);
}
