//! The REST fuzz target on stable: the committed corpus replayed, and the
//! same body run as a property test over arbitrary bytes.

use proptest::prelude::*;

#[test]
fn committed_fuzz_corpus_replays_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/rest_request");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory exists") {
        let path = entry.expect("entry").path();
        p2pd_rest::fuzz::request(&std::fs::read(&path).expect("corpus file"));
        replayed += 1;
    }
    assert!(
        replayed >= 4,
        "only {replayed} corpus files in {}",
        dir.display()
    );
}

proptest! {
    #[test]
    fn any_request_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        p2pd_rest::fuzz::request(&data);
    }

    #[test]
    fn any_header_text(
        target in "/[ -~]{0,80}",
        headers in proptest::collection::vec(
            ("(?i)(host|origin|referer|sec-fetch-site|x-p2pd-token|x)", "[ -~]{0,40}"),
            0..6,
        ),
        m in 0u8..4,
    ) {
        let mut data = vec![m];
        data.extend_from_slice(target.as_bytes());
        for (name, value) in headers {
            data.extend_from_slice(format!("\n{name}: {value}").as_bytes());
        }
        p2pd_rest::fuzz::request(&data);
    }
}
