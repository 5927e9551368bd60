//! The test guest on /dev/kvm under `vireo-vmm`: boot with one and two vCPUs, and every way a
//! guest can end — power-off, reboot, the power button, a triple fault, a crash, the host.

use std::time::Duration;

use serde_json::json;
use vireo_tests::{kvm_available, poll_until, scratch_dir, test_guest, Vmm};

const BOOT: Duration = Duration::from_secs(60);
const END: Duration = Duration::from_secs(60);

fn guest_args(vcpus: u8, scenario: &str) -> Vec<String> {
    vec![
        "--kernel".into(),
        test_guest().display().to_string(),
        "--vcpus".into(),
        vcpus.to_string(),
        "--memory-mib".into(),
        "64".into(),
        "--cmdline".into(),
        format!("scenario={scenario}"),
    ]
}

fn start(vcpus: u8, scenario: &str) -> Vmm {
    let args = guest_args(vcpus, scenario);
    Vmm::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn guest_boots_with_one_and_two_vcpus_and_powers_off() {
    if !kvm_available("guest_boots_with_one_and_two_vcpus_and_powers_off") {
        return;
    }
    for vcpus in [1u8, 2] {
        let mut vmm = start(vcpus, "power-off");
        vmm.expect(&format!("vireo-test-guest: booted cpus={vcpus} "), BOOT);
        vmm.expect("vireo-test-guest: powering off", END);
        let exit = vmm.wait(END);
        assert_eq!(exit.status.code(), Some(0), "{exit:?}");
        assert_eq!(exit.reason(), "guest-power-off");
        let marker = exit.record.as_ref().unwrap()["boot_marker_ms"].as_f64();
        assert!(
            marker.is_some_and(|ms| ms > 0.0),
            "boot marker recorded: {exit:?}"
        );
    }
}

#[test]
fn second_vcpu_comes_online_by_init_sipi() {
    if !kvm_available("second_vcpu_comes_online_by_init_sipi") {
        return;
    }
    let mut vmm = start(2, "shell");
    vmm.expect("vireo-test-guest: cpu 1 online apic=1", BOOT);
    vmm.expect("vireo> ", BOOT);
    assert_eq!(vmm.shell("cpus"), "cpus=2");
    assert_eq!(vmm.shell("echo hello from the host"), "hello from the host");
    vmm.send("poweroff\n");
    assert_eq!(vmm.wait(END).status.code(), Some(0));
}

/// The guest's `pit` answer: IRQ 0s counted, LAPIC ticks waited, channel 2's two latched
/// counts, and its output after the terminal count.
fn parse_pit_answer(answer: &str) -> (u64, u64, [u64; 2], u64) {
    let field = |name: &str| -> &str {
        answer
            .split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {answer:?}"))
    };
    let number = |text: &str| text.parse::<u64>().unwrap();
    let (first, second) = field("ch2=").split_once(',').unwrap();
    (
        number(field("irq0=")),
        number(field("ticks=")),
        [number(first), number(second)],
        number(field("out2=")),
    )
}

#[test]
fn the_pit_raises_irq_0_periodically_and_channel_2_counts_down() {
    if !kvm_available("the_pit_raises_irq_0_periodically_and_channel_2_counts_down") {
        return;
    }
    let mut vmm = start(1, "shell");
    vmm.expect("vireo> ", BOOT);
    // Twice: the second run programs a PIT the first one shut down.
    for _ in 0..2 {
        let answer = vmm.shell("pit");
        let (irqs, ticks, [first, second], out2) = parse_pit_answer(&answer);
        // 1 kHz for `ticks` LAPIC ticks of 10 ms: 200 when nothing is late. Interrupts that
        // pile up while the vCPU is not scheduled coalesce, so only a floor and a ceiling
        // far from it are checked: periodic, and no flood.
        let expected = ticks * 10;
        assert!(
            (expected / 10..=expected * 2).contains(&irqs),
            "{irqs} IRQ 0s in {ticks} ticks: {answer}"
        );
        assert!(
            first > second && first - second >= 1000,
            "channel 2 counts down over a tick: {answer}"
        );
        assert_eq!(out2, 1, "OUT2 rises at the terminal count: {answer}");
    }
    vmm.send("poweroff\n");
    assert_eq!(vmm.wait(END).status.code(), Some(0));
}

#[test]
fn guest_reboot_ends_with_reset_status() {
    if !kvm_available("guest_reboot_ends_with_reset_status") {
        return;
    }
    let mut vmm = start(1, "reboot");
    vmm.expect("vireo-test-guest: rebooting", BOOT);
    let exit = vmm.wait(END);
    assert_eq!(exit.status.code(), Some(3), "{exit:?}");
    assert_eq!(exit.reason(), "guest-reset");
}

#[test]
fn power_button_on_the_control_socket_powers_the_guest_off() {
    if !kvm_available("power_button_on_the_control_socket_powers_the_guest_off") {
        return;
    }
    let dir = scratch_dir("power-button");
    let socket = dir.join("control.sock");
    let args = guest_args(2, "wait");
    let mut vmm = Vmm::start_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&socket),
    );
    vmm.expect("vireo-test-guest: booted", BOOT);
    vmm.wait_for_control(BOOT);
    // The guest enables the power-button event before it waits; give it until then.
    poll_until(BOOT, Duration::from_millis(20), || {
        if vmm.control(json!({"cmd": "status"}))["power_button_enabled"] == json!(true) {
            Ok(())
        } else {
            Err("guest never enabled PWRBTN_EN".into())
        }
    });
    assert_eq!(
        vmm.control(json!({"cmd": "power-button"}))["ok"],
        json!(true)
    );
    vmm.expect("vireo-test-guest: power button pressed", END);
    let exit = vmm.wait(END);
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    assert_eq!(exit.reason(), "guest-power-off");
    assert!(!socket.exists(), "control socket removed at exit");
}

#[test]
fn pause_stops_the_guest_clock_and_resume_continues_it() {
    if !kvm_available("pause_stops_the_guest_clock_and_resume_continues_it") {
        return;
    }
    let dir = scratch_dir("pause");
    let socket = dir.join("control.sock");
    let args = guest_args(2, "shell");
    let mut vmm = Vmm::start_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&socket),
    );
    vmm.expect("vireo> ", BOOT);
    vmm.wait_for_control(BOOT);
    let interval = Duration::from_millis(1500);

    let before_pause = vmm.ticks();
    assert_eq!(vmm.control(json!({"cmd": "pause"})), json!({"ok": true}));
    assert_eq!(
        vmm.control(json!({"cmd": "status"}))["state"],
        json!("paused")
    );
    std::thread::sleep(interval);
    assert_eq!(vmm.control(json!({"cmd": "resume"})), json!({"ok": true}));
    let after_pause = vmm.ticks();
    std::thread::sleep(interval);
    let after_run = vmm.ticks();

    let paused_delta = after_pause - before_pause;
    let running_delta = after_run - after_pause;
    assert!(running_delta > 0, "the tick counter moves while running");
    assert!(
        paused_delta * 3 < running_delta,
        "ticks while paused ({paused_delta}) should be far fewer than over the same time running ({running_delta})"
    );
    assert_eq!(
        vmm.control(json!({"cmd": "power-off"})),
        json!({"ok": true})
    );
    let exit = vmm.wait(END);
    assert_eq!(
        (exit.status.code(), exit.reason()),
        (Some(0), "host-power-off")
    );
}

#[test]
fn triple_fault_is_a_reset_and_an_unemulatable_instruction_a_crash() {
    if !kvm_available("triple_fault_is_a_reset_and_an_unemulatable_instruction_a_crash") {
        return;
    }
    let mut vmm = start(1, "shell");
    vmm.expect("vireo> ", BOOT);
    vmm.send("triple-fault\n");
    let exit = vmm.wait(END);
    assert_eq!(exit.status.code(), Some(3), "{exit:?}");
    assert!(
        exit.record.as_ref().unwrap()["cause"]
            .as_str()
            .unwrap()
            .contains("triple fault"),
        "{exit:?}"
    );

    let mut vmm = start(1, "shell");
    vmm.expect("vireo> ", BOOT);
    vmm.send("bad-insn\n");
    let exit = vmm.wait(END);
    if vireo_tests::hardware_kvm() {
        // Hardware KVM executes the instruction; the shell carries on.
        return;
    }
    assert_eq!(exit.status.code(), Some(4), "{exit:?}");
    assert_eq!(exit.reason(), "crashed");
    let detail = exit.record.as_ref().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        detail.contains("instruction"),
        "crash names the instruction: {detail}"
    );
}

#[test]
fn host_signals_end_the_vm_as_killed() {
    if !kvm_available("host_signals_end_the_vm_as_killed") {
        return;
    }
    let mut vmm = start(2, "shell");
    vmm.expect("vireo> ", BOOT);
    vmm.signal("TERM");
    let exit = vmm.wait(END);
    assert_eq!(exit.status.code(), Some(5), "{exit:?}");
    assert_eq!(exit.record.as_ref().unwrap()["signal"], json!(15));
}
