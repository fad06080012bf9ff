//! The `detector` binary is the product: research tools (the NAB
//! evaluation, now `nab-eval`) are not part of it.

use std::process::Command;

fn detector(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_detector"))
        .args(args)
        .env_clear()
        .output()
        .expect("the detector binary runs")
}

#[test]
fn the_detector_offers_replay_but_not_the_nab_evaluation() {
    let help = detector(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    assert!(text.contains("replay"), "{text}");
    assert!(!text.contains("evaluate"), "{text}");
    assert!(!text.contains("NAB"), "{text}");

    let evaluate = detector(&["evaluate", "--help"]);
    assert!(
        !evaluate.status.success(),
        "`detector evaluate` still exists"
    );
}
