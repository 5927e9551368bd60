"""Local groups and merged permissions, through pyVmomi against a fresh vireod: root makes groups
with HostLocalAccountManager (CreateGroup, AssignUserToGroup, UnassignUserFromGroup,
RemoveGroup), UserDirectory.RetrieveUserGroups finds users and groups, permissions name groups
(`group=True`), and a user's effective privileges merge as ESXi merges them — the nearest
entity decides, the user's own permission there beats its groups', several groups there add
up; MergePermissions moves one role's permissions to another; all of it survives a restart."""
import os

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from test_security_authz import as_user, create_user, refused, si  # noqa: F401 (fixture)
from test_vm_lifecycle import agent, create_vm  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

READ_ONLY, NO_ACCESS = -2, -5
POWER_ON = "VirtualMachine.Interact.PowerOn"
RENAME = "VirtualMachine.Config.Rename"


def create_group(si, name):
    si.content.accountManager.CreateGroup(vim.host.LocalAccountManager.AccountSpecification(id=name))


def grant(si, entity, principal, role_id, group, propagate=True):
    permission = vim.AuthorizationManager.Permission(principal=principal, group=group, roleId=role_id,
                                                     propagate=propagate)
    si.content.authorizationManager.SetEntityPermissions(entity, [permission])


def search(si, text="", **kwargs):
    found = si.content.userDirectory.RetrieveUserGroups(searchStr=text, exactMatch=False,
                                                        findUsers=True, findGroups=True, **kwargs)
    return {(r.principal, r.group) for r in found}


def granted(si, entity, user, privileges):
    answer = si.content.authorizationManager.HasUserPrivilegeOnEntities([entity], user, privileges)
    return {p.privId for p in answer[0].privAvailability if p.isGranted}


def test_groups_grant_their_members_and_merge_like_esxi(si, agent):
    vm = create_vm(si, "grouped")
    accounts, auth = si.content.accountManager, si.content.authorizationManager
    vm_folder = si.content.rootFolder.childEntity[0].vmFolder
    create_user(si, "gina", "Gina-pass-1")
    create_user(si, "hugo", "Hugo-pass-1")
    for group in ("operators", "renamers"):
        create_group(si, group)
    accounts.AssignUserToGroup("gina", "operators")
    accounts.AssignUserToGroup("gina", "renamers")
    accounts.AssignUserToGroup("hugo", "operators")
    # The directory knows both kinds of principal and who belongs where.
    assert {("gina", False), ("hugo", False), ("operators", True), ("renamers", True)} <= search(si)
    assert search(si, "oper") == {("operators", True)}
    assert search(si, belongsToGroup="operators") == {("gina", False), ("hugo", False)}
    assert search(si, belongsToUser="gina") == {("operators", True), ("renamers", True)}
    with pytest.raises(vim.fault.AlreadyExists):
        create_group(si, "operators")
    with pytest.raises(vim.fault.AlreadyExists):
        accounts.AssignUserToGroup("gina", "operators")
    with pytest.raises(vim.fault.UserNotFound):
        accounts.AssignUserToGroup("ghost", "operators")
    with pytest.raises(vim.fault.UserNotFound):
        grant(si, vm_folder, "no-such-group", READ_ONLY, group=True)

    power = auth.AddAuthorizationRole("group-power-on", [POWER_ON])
    rename = auth.AddAuthorizationRole("group-rename", [RENAME])
    # Two groups of gina's on the same entity: she gets both roles; hugo only his group's.
    grant(si, vm_folder, "operators", power, group=True)
    grant(si, vm_folder, "renamers", rename, group=True)
    assert granted(si, vm, "gina", [POWER_ON, RENAME]) == {POWER_ON, RENAME}
    assert granted(si, vm, "hugo", [POWER_ON, RENAME]) == {POWER_ON}
    gina = agent.vireod.connect("gina", "Gina-pass-1")
    hers = as_user(gina, vm)
    assert hers.name == "grouped"
    # A user's own permission on that entity takes precedence over every group permission.
    grant(si, vm_folder, "gina", READ_ONLY, group=False)
    assert granted(si, vm, "gina", [POWER_ON, RENAME]) == set()
    refused(lambda: hers.PowerOnVM_Task(), POWER_ON)
    auth.RemoveEntityPermission(vm_folder, "gina", False)
    # A group permission lower down (on the VM) overrides the groups' ones above it.
    grant(si, vm, "renamers", NO_ACCESS, group=True)
    assert granted(si, vm, "gina", [POWER_ON, RENAME, "System.Read"]) == set()
    assert granted(si, vm, "hugo", [POWER_ON]) == {POWER_ON}
    auth.RemoveEntityPermission(vm, "renamers", True)
    # MergePermissions: the renamers' permission now grants what the power-on role grants.
    auth.MergePermissions(rename, power)
    assert [p.principal for p in auth.RetrieveRolePermissions(power)] == ["operators", "renamers"]
    assert auth.RetrieveRolePermissions(rename) == []
    assert granted(si, vm, "gina", [POWER_ON, RENAME]) == {POWER_ON}
    with pytest.raises(vim.fault.NotFound):
        auth.MergePermissions(4242, power)
    with pytest.raises(vim.fault.AuthMinimumAdminPermission):
        auth.MergePermissions(-1, READ_ONLY)  # root's Admin on the root folder must stay
    # Leaving a group takes its grant away at the next call.
    accounts.UnassignUserFromGroup("hugo", "operators")
    assert granted(si, vm, "hugo", [POWER_ON]) == set()
    with pytest.raises(vim.fault.UserNotFound):
        accounts.UnassignUserFromGroup("hugo", "operators")

    # Groups, memberships and group permissions survive a restart.
    Disconnect(gina)
    agent.stop()
    agent.start()
    si = agent.vireod.connect()
    vm = si.content.searchIndex.FindByInventoryPath("ha-datacenter/vm/grouped")
    assert search(si, belongsToUser="gina") == {("operators", True), ("renamers", True)}
    assert granted(si, vm, "gina", [POWER_ON]) == {POWER_ON}
    # Removing a group removes its permissions and its members' grants.
    si.content.accountManager.RemoveGroup("operators")
    si.content.accountManager.RemoveGroup("renamers")
    assert all(not p.group for p in si.content.authorizationManager.RetrieveAllPermissions())
    assert granted(si, vm, "gina", [POWER_ON]) == set()
    with pytest.raises(vim.fault.UserNotFound):
        si.content.accountManager.RemoveGroup("operators")
    Disconnect(si)
