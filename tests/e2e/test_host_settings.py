"""The host's advanced settings (ServiceContent.setting, configManager.advancedOption) as
hardening scripts change them: listed with their ranges and configured defaults, queried by key
or prefix, changed with UpdateOptions (bad keys and values refused, nothing half-applied), kept
across a vireod restart, and honoured at once: the failed-login lockout locks root after the
set number of failures and lifting it unlocks; a shorter session timeout logs idle sessions out.
Beside them, the read-only HostDateTimeSystem: the machine's clock, time zone and NTP files."""
import os
import time

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

from conftest import ROOT_PASSWORD, start_vireod, vireod  # noqa: F401 (fixture)
from test_vm_lifecycle import Agent, wait_for


def setting(si):
    return si.content.setting


def values(manager, name):
    return {o.key: o.value for o in manager.QueryOptions(name=name)}


def test_settings_are_listed_checked_and_honoured():
    with start_vireod("account_lock_failures = 7\n") as server:
        si = server.connect()
        manager = setting(si)
        host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
        assert host.configManager.advancedOption == manager
        supported = {o.key: o.optionType for o in manager.supportedOption}
        assert supported["Security.AccountLockFailures"].defaultValue == 7
        assert values(manager, "Security.") == {"Security.AccountLockFailures": 7,
                                                "Security.AccountUnlockTime": 900}
        with pytest.raises(vim.fault.InvalidName):
            manager.QueryOptions(name="No.Such.Key")
        with pytest.raises(vim.fault.InvalidName):
            manager.UpdateOptions(changedValue=[vim.option.OptionValue(key="No.Such.Key", value=1)])
        with pytest.raises(vmodl.fault.InvalidArgument):
            manager.UpdateOptions(changedValue=[
                vim.option.OptionValue(key="Security.AccountLockFailures", value=2),
                vim.option.OptionValue(key="Security.AccountUnlockTime", value=-5)])
        assert values(manager, "Security.AccountLockFailures") == {"Security.AccountLockFailures": 7}

        manager.UpdateOptions(changedValue=[vim.option.OptionValue(key="Security.AccountLockFailures", value=2)])
        assert {o.key: o.value for o in manager.setting}["Security.AccountLockFailures"] == 2
        for _ in range(2):
            with pytest.raises(vim.fault.InvalidLogin):
                server.connect(pwd="wrong")
        with pytest.raises(vim.fault.InvalidLogin):
            server.connect()  # locked, although the password is right
        manager.UpdateOptions(changedValue=[vim.option.OptionValue(key="Security.AccountLockFailures", value=0)])
        Disconnect(server.connect())  # a lockout of 0 failures locks nobody

        idle = server.connect()
        idle_key = idle.content.sessionManager.currentSession.key
        manager.UpdateOptions(changedValue=[
            vim.option.OptionValue(key="UserVars.HostClientSessionTimeout", value=1)])

        def logged_out():
            time.sleep(2)  # watched from fresh sessions: touching the idle one would keep it alive
            watcher = server.connect()
            try:
                return idle_key not in {s.key for s in watcher.content.sessionManager.sessionList}
            finally:
                Disconnect(watcher)
        wait_for(logged_out, "the idle session to be logged out", timeout=90)
        with pytest.raises(vim.fault.NotAuthenticated):
            idle.content.rootFolder.name


def test_changed_settings_survive_a_restart():
    agent = Agent()
    try:
        si = agent.vireod.connect()
        setting(si).UpdateOptions(changedValue=[vim.option.OptionValue(key="Security.AccountUnlockTime", value=60)])
        Disconnect(si)
        agent.stop()
        agent.start()
        si = agent.vireod.connect(pwd=ROOT_PASSWORD)
        assert values(setting(si), "Security.AccountUnlockTime") == {"Security.AccountUnlockTime": 60}
        Disconnect(si)
    finally:
        agent.close()


def test_date_time_system_shows_the_machine_clock(vireod):
    si = vireod.connect()
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    system = host.configManager.dateTimeSystem
    before = time.time()
    now = system.QueryDateTime().timestamp()
    assert before - 1 <= now <= time.time() + 1
    zone = system.dateTimeInfo.timeZone
    assert os.path.realpath("/etc/localtime").endswith("/" + zone.name)
    assert zone.gmtOffset == time.localtime().tm_gmtoff
    if os.path.exists("/etc/systemd/timesyncd.conf"):
        assert "/etc/systemd/timesyncd.conf" in system.dateTimeInfo.ntpConfig.configFile
    with pytest.raises(vmodl.fault.NotSupported):
        system.UpdateDateTime(dateTime=system.QueryDateTime())
    Disconnect(si)
