//! The `vdisk` command line as a script sees it: outputs, exit codes, one-line errors.

mod common;

use common::{run, Scratch};

fn vdisk(args: &[&str]) -> (i32, String) {
    run(env!("CARGO_BIN_EXE_vdisk"), args)
}

#[test]
fn create_write_read_snapshot_commit_check() {
    let dir = Scratch::new("cli");
    let base = dir.path("base.qcow2");
    let top = dir.path("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    assert_eq!(vdisk(&["create", "--cluster-size", "4K", b, "8M"]).0, 0);
    assert_eq!(
        vdisk(&[
            "write",
            b,
            "--offset",
            "1M",
            "--length",
            "64K",
            "--pattern",
            "0x5a"
        ])
        .0,
        0
    );
    assert_eq!(vdisk(&["snapshot", b, t]).0, 0);
    assert_eq!(
        vdisk(&[
            "write",
            t,
            "--offset",
            "1M",
            "--length",
            "4K",
            "--pattern",
            "7"
        ])
        .0,
        0
    );
    assert_eq!(
        vdisk(&[
            "read",
            t,
            "--offset",
            "1M",
            "--length",
            "4K",
            "--pattern",
            "7"
        ])
        .0,
        0
    );
    let (code, text) = vdisk(&[
        "read",
        t,
        "--offset",
        "1M",
        "--length",
        "8K",
        "--pattern",
        "7",
    ]);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("verification failed at offset 1052672"),
        "{text}"
    );
    let (code, text) = vdisk(&["info", "--json", t]);
    assert_eq!(code, 0);
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["backing-filename"], "base.qcow2");
    assert_eq!(info["virtual-size"], 8 << 20);
    assert_eq!(vdisk(&["commit", t]).0, 0);
    assert_eq!(
        vdisk(&[
            "read",
            b,
            "--offset",
            "1M",
            "--length",
            "4K",
            "--pattern",
            "7"
        ])
        .0,
        0
    );
    assert_eq!(
        vdisk(&[
            "read",
            b,
            "--offset",
            "1028K",
            "--length",
            "60K",
            "--pattern",
            "0x5a"
        ])
        .0,
        0
    );
    let (code, text) = vdisk(&["check", b]);
    assert_eq!(code, 0, "{text}");
    common::assert_check_clean(&base, false);
    let (code, text) = vdisk(&["map", "--json", t]);
    assert_eq!(code, 0);
    assert!(
        text.contains("\"backing\"") && !text.contains("\"data\""),
        "{text}"
    );
}

#[test]
fn bad_files_give_one_line_and_exit_1() {
    let dir = Scratch::new("cli-bad");
    let junk = dir.path("junk.qcow2");
    std::fs::write(&junk, b"QFI\xfb\x00\x00\x00\x09garbage").unwrap();
    for args in [
        vec!["info", junk.to_str().unwrap()],
        vec!["map", junk.to_str().unwrap()],
        vec!["check", junk.to_str().unwrap()],
        vec![
            "read",
            "/nonexistent/x",
            "--offset",
            "0",
            "--length",
            "1",
            "--pattern",
            "0",
        ],
    ] {
        let (code, text) = vdisk(&args);
        assert_eq!(code, 1, "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.starts_with("vdisk: "), "{text}");
    }
}

#[test]
fn cbt_enable_changed_disable() {
    let dir = Scratch::new("cli-cbt");
    let disk = dir.path("disk.qcow2");
    let d = disk.to_str().unwrap();
    assert_eq!(vdisk(&["create", d, "64M"]).0, 0);
    let (code, since) = vdisk(&["cbt", "enable", d]);
    assert_eq!(code, 0, "{since}");
    let since = since.trim().to_string();
    assert_eq!(vdisk(&["cbt", "current", d]).1.trim(), since);
    for offset in ["1M", "40M"] {
        let args = [
            "write",
            d,
            "--offset",
            offset,
            "--length",
            "4K",
            "--pattern",
            "1",
        ];
        assert_eq!(vdisk(&args).0, 0);
    }
    let (code, out) = vdisk(&["cbt", "changed", "--since", &since, "--json", d]);
    assert_eq!(code, 0, "{out}");
    let extents: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        extents,
        serde_json::json!([{"start": 1 << 20, "length": 65536}, {"start": 40 << 20, "length": 65536}])
    );
    assert_eq!(vdisk(&["cbt", "disable", d]).0, 0);
    let (code, out) = vdisk(&["cbt", "changed", "--since", &since, d]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("vdisk: changeId") && out.contains("before change tracking"),
        "{out}"
    );
}

#[test]
fn convert_to_vmdk_and_import_through_a_pipe() {
    let dir = Scratch::new("cli-convert");
    let src = dir.path("src.qcow2");
    let s = src.to_str().unwrap();
    assert_eq!(vdisk(&["create", s, "8M"]).0, 0);
    let pattern = ["--offset", "3M", "--length", "200K", "--pattern", "0x42"];
    assert_eq!(vdisk(&[&["write", s][..], &pattern[..]].concat()).0, 0);
    for (format, file) in [
        ("vmdk", "sparse.vmdk"),
        ("vmdk,subformat=streamOptimized", "stream.vmdk"),
        ("raw", "copy.raw"),
        ("qcow2", "copy.qcow2"),
    ] {
        let out = dir.path(file);
        let o = out.to_str().unwrap();
        let (code, text) = vdisk(&["convert", "-p", "-O", format, s, o]);
        assert_eq!(code, 0, "{format}: {text}");
        assert!(text.contains("100%"), "progress shown: {text}");
        let (code, text) = run("qemu-img", &["compare", s, o]);
        assert_eq!(code, 0, "{format}: {text}");
    }
    // Export to a pipe, import from a pipe.
    let back = dir.path("back.qcow2");
    let script = format!(
        "{0} convert -O vmdk,subformat=streamOptimized {1} - | {0} import - {2}",
        env!("CARGO_BIN_EXE_vdisk"),
        s,
        back.display()
    );
    let (code, text) = run("sh", &["-c", &script]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        run("qemu-img", &["compare", s, back.to_str().unwrap()]).0,
        0
    );
    // Refusals are one line and exit 1.
    let (code, text) = vdisk(&["convert", "-O", "vmdk,subformat=twoGbMaxExtentFlat", s, "x"]);
    assert_eq!((code, text.lines().count()), (1, 1), "{text}");
    let (code, text) = vdisk(&["convert", "-O", "qcow2", s, "-"]);
    assert_eq!((code, text.lines().count()), (1, 1), "{text}");
    let (code, text) = vdisk(&["import", s, dir.path("n.qcow2").to_str().unwrap()]);
    assert_eq!((code, text.lines().count()), (1, 1), "{text}");
    assert!(text.contains("VMDK"), "{text}");
}
