"""Authorization as ESXi does it, through pyVmomi against a fresh vireod: root creates accounts
through HostLocalAccountManager and grants roles with AuthorizationManager; a ReadOnly user
sees the whole inventory and gets NoPermission (naming the privilege) on every mutating call;
a user with no permission, or with NoAccess, sees nothing; a custom role on one VM powers that
VM on and not another; HasPrivilegeOnEntities answers truthfully; accounts, roles and
permissions survive a restart; the account and permission faults ESXi raises."""
import os
import ssl
import stat
import urllib.error
import urllib.request

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import connection_to
from test_vm_lifecycle import agent, config_spec, create_vm, power_on_booted, root_pool  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

READ_ONLY, NO_ACCESS = -2, -5


si = connection_to("agent")


def create_user(si, name, password):
    spec = vim.host.LocalAccountManager.AccountSpecification(id=name, password=password, description=name)
    si.content.accountManager.CreateUser(spec)


def grant(si, entity, user, role_id, propagate=True):
    permission = vim.AuthorizationManager.Permission(principal=user, group=False, roleId=role_id, propagate=propagate)
    si.content.authorizationManager.SetEntityPermissions(entity, [permission])


def visible(connection, types=(vim.VirtualMachine, vim.HostSystem, vim.Datastore, vim.Network)):
    """Names of the objects a ContainerView over the root folder lets this session retrieve."""
    content = connection.content
    view = content.viewManager.CreateContainerView(content.rootFolder, list(types), True)
    try:
        spec = vim.PropertyCollector.FilterSpec(
            objectSet=[vim.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[
                vim.PropertyCollector.TraversalSpec(name="v", type=vim.view.ContainerView, path="view")])],
            propSet=[vim.PropertyCollector.PropertySpec(type=t, pathSet=["name"]) for t in types])
        found = content.propertyCollector.RetrieveContents([spec])
        return {o.propSet[0].val for o in found}, len(view.view)
    finally:
        view.DestroyView()


def as_user(connection, obj):
    """The same managed object, called through another session."""
    return type(obj)(obj._moId, connection._stub)


def refused(call, privilege):
    with pytest.raises(vim.fault.NoPermission) as fault:
        call()
    assert fault.value.privilegeId == privilege, fault.value
    return fault.value


def folder_get(agent, relative, cookie):
    url = (f"https://127.0.0.1:{agent.port}/folder/{relative}?dcPath=ha-datacenter&dsName=datastore1")
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_read_only_user_sees_everything_and_changes_nothing(si, agent):
    vm = create_vm(si, "ro-target")
    create_user(si, "reader", "Reader-pass-1")
    grant(si, si.content.rootFolder, "reader", READ_ONLY)
    ro = agent.vireod.connect("reader", "Reader-pass-1")
    names, _ = visible(ro)
    assert {"ro-target", "datastore1", "VM Network"} <= names and len(names) >= 4, names
    rvm = as_user(ro, vm)
    assert rvm.config.files.vmPathName == vm.config.files.vmPathName
    folder = ro.content.rootFolder.childEntity[0].vmFolder
    pool = root_pool(ro)
    refused(lambda: rvm.PowerOnVM_Task(), "VirtualMachine.Interact.PowerOn")
    refused(lambda: rvm.CreateSnapshot_Task(name="s", memory=False, quiesce=False), "VirtualMachine.State.CreateSnapshot")
    refused(lambda: rvm.Destroy_Task(), "VirtualMachine.Inventory.Delete")
    refused(lambda: rvm.ReconfigVM_Task(vim.vm.ConfigSpec(memoryMB=128)), "VirtualMachine.Config.Memory")
    refused(lambda: rvm.ReconfigVM_Task(vim.vm.ConfigSpec(annotation="x")), "VirtualMachine.Config.Annotation")
    refused(lambda: rvm.UnregisterVM(), "VirtualMachine.Inventory.Unregister")
    refused(lambda: rvm.AcquireTicket("webmks"), "VirtualMachine.Interact.ConsoleInteract")
    refused(lambda: folder.CreateVM_Task(config=config_spec("ro-new"), pool=pool), "VirtualMachine.Inventory.Create")
    refused(lambda: folder.RegisterVM_Task(path=vm.config.files.vmPathName, asTemplate=False, pool=pool),
            "VirtualMachine.Inventory.Register")
    refused(lambda: rvm.CloneVM_Task(folder=folder, name="ro-copy", spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())),
            "VirtualMachine.Provisioning.Clone")
    root_key = si.content.sessionManager.currentSession.key
    reader_key = ro.content.sessionManager.currentSession.key
    refused(lambda: ro.content.sessionManager.TerminateSession([root_key]), "Sessions.TerminateSession")
    auth = ro.content.authorizationManager
    refused(lambda: grant(ro, ro.content.rootFolder, "reader", -1), "Authorization.ModifyPermissions")
    refused(lambda: auth.AddAuthorizationRole("mine", []), "Authorization.ModifyRoles")
    refused(lambda: create_user(ro, "reader2", "Reader-pass-2"), "Host.Local.ManageUserGroups")
    with pytest.raises(vim.fault.InvalidLogin):
        ro.content.sessionManager.Login("root", "Reader-pass-1")
    # A user sees their own sessions; a holder of Sessions.TerminateSession sees everyone's.
    assert {s.userName for s in ro.content.sessionManager.sessionList} == {"reader"}
    assert {"root", "reader"} <= {s.userName for s in si.content.sessionManager.sessionList}
    # Events: the inventory's are readable, but other users' session keys (cookies) are not.
    def logins(connection):
        events = connection.content.eventManager.QueryEvents(vim.event.EventFilterSpec())
        return {e.sessionId: e.userName for e in events if isinstance(e, vim.event.UserLoginSessionEvent)}
    assert root_key in logins(si) and root_key not in logins(ro)
    assert logins(ro)[reader_key] == "reader" and "root" in logins(ro).values()
    assert any(isinstance(e, vim.event.VmCreatedEvent) for e in
               ro.content.eventManager.QueryEvents(vim.event.EventFilterSpec()))
    # /folder needs Datastore.Browse, which ReadOnly does not grant.
    vmx = vm.config.files.vmPathName.split("] ", 1)[1]
    assert folder_get(agent, vmx, ro._stub.cookie) == 403
    assert folder_get(agent, vmx, si._stub.cookie) == 200
    # Nothing changed.
    assert vm.runtime.powerState == "poweredOff" and vm.snapshot is None and vm.config.hardware.memoryMB == 64
    assert [v.name for v in folder.childEntity].count("ro-target") == 1
    # HasPrivilegeOnEntities answers for either session, truthfully.
    ask = si.content.authorizationManager.HasPrivilegeOnEntities
    wanted = ["System.Read", "VirtualMachine.Interact.PowerOn"]
    for key, expected in ((reader_key, [True, False]), (root_key, [True, True])):
        result = ask([vm, si.content.rootFolder], key, wanted)
        assert [[p.isGranted for p in e.privAvailability] for e in result] == [expected, expected]
    Disconnect(ro)


def test_users_without_permission_see_nothing(si, agent):
    vm = create_vm(si, "hidden")
    create_user(si, "nobody1", "Nobody-pass-1")
    create_user(si, "denied", "Denied-pass-1")
    grant(si, si.content.rootFolder, "denied", NO_ACCESS)
    for user, password in (("nobody1", "Nobody-pass-1"), ("denied", "Denied-pass-1")):
        connection = agent.vireod.connect(user, password)
        assert visible(connection) == (set(), 0), user
        spec = vim.PropertyCollector.FilterSpec(
            objectSet=[vim.PropertyCollector.ObjectSpec(obj=connection.content.rootFolder)],
            propSet=[vim.PropertyCollector.PropertySpec(type=vim.Folder, pathSet=["name"])])
        with pytest.raises(vmodl.fault.ManagedObjectNotFound):  # as if it did not exist
            connection.content.propertyCollector.RetrieveContents([spec])
        hidden = as_user(connection, vm)
        refused(lambda: hidden.name, "System.Read")
        refused(lambda: hidden.PowerOnVM_Task(), "VirtualMachine.Interact.PowerOn")
        assert connection.content.authorizationManager.RetrieveAllPermissions() == []
        assert connection.content.eventManager.QueryEvents(vim.event.EventFilterSpec()) == []
        Disconnect(connection)


def test_custom_role_powers_on_one_vm_and_not_another(si, agent):
    allowed, other = create_vm(si, "role-on"), create_vm(si, "role-off")
    auth = si.content.authorizationManager
    role = auth.AddAuthorizationRole("vm-power-on", ["VirtualMachine.Interact.PowerOn"])
    assert role >= 10
    create_user(si, "operator", "Operator-pass-1")
    grant(si, allowed, "operator", role)
    op = agent.vireod.connect("operator", "Operator-pass-1")
    assert visible(op) == ({"role-on"}, 1)
    mine = as_user(op, allowed)
    # References to what the user cannot see are left out; searches do not find it.
    assert mine.datastore == [] and allowed.datastore[0].name == "datastore1"
    search = op.content.searchIndex
    assert search.FindByInventoryPath("ha-datacenter/vm/role-on") == mine
    assert search.FindByInventoryPath("ha-datacenter/vm/role-off") is None
    power_on_booted(agent, mine)
    refused(lambda: mine.PowerOffVM_Task(), "VirtualMachine.Interact.PowerOff")
    refused(lambda: as_user(op, other).PowerOnVM_Task(), "VirtualMachine.Interact.PowerOn")
    assert other.runtime.powerState == "poweredOff"
    answer = auth.HasUserPrivilegeOnEntities([allowed, other], "operator", ["VirtualMachine.Interact.PowerOn"])
    assert [e.privAvailability[0].isGranted for e in answer] == [True, False]
    fetched = auth.FetchUserPrivilegeOnEntities([allowed, other], "operator")
    assert "VirtualMachine.Interact.PowerOn" in fetched[0].privileges and not fetched[1].privileges
    assert [p.principal for p in auth.RetrieveRolePermissions(role)] == ["operator"]
    with pytest.raises(vim.fault.RemoveFailed):
        auth.RemoveAuthorizationRole(role, True)
    WaitForTask(allowed.PowerOffVM_Task())
    Disconnect(op)


def test_accounts_roles_and_permissions_persist_and_fault_like_esxi(si, agent):
    auth = si.content.authorizationManager
    accounts = si.content.accountManager
    create_user(si, "keeper", "Keeper-pass-1")
    role = auth.AddAuthorizationRole("keeper-role", ["Datastore.Browse"])
    datastore = si.content.rootFolder.childEntity[0].datastore[0]
    grant(si, datastore, "keeper", role, propagate=False)
    with pytest.raises(vim.fault.AlreadyExists):
        create_user(si, "keeper", "x")
    with pytest.raises(vim.fault.AlreadyExists):
        auth.AddAuthorizationRole("ReadOnly", [])
    with pytest.raises(vim.fault.UserNotFound):
        grant(si, datastore, "ghost", role)
    with pytest.raises(vim.fault.NotFound):
        grant(si, datastore, "keeper", 4242)
    with pytest.raises(vim.fault.AuthMinimumAdminPermission):
        auth.RemoveEntityPermission(si.content.rootFolder, "root", False)
    # A name that would forge a line of the account file is refused.
    with pytest.raises(vmodl.fault.InvalidArgument):
        create_user(si, "evil:$argon2id$\nroot", "x")
    agent.stop()
    agent.start()
    si = agent.vireod.connect()
    auth, accounts = si.content.authorizationManager, si.content.accountManager
    assert {r.name: r.roleId for r in auth.roleList}["keeper-role"] == role
    datastore = si.content.rootFolder.childEntity[0].datastore[0]
    kept = auth.RetrieveEntityPermissions(datastore, False)
    assert [(p.principal, p.roleId, p.propagate) for p in kept] == [("keeper", role, False)]
    mode = os.stat(os.path.join(agent.data_dir, "authz.json")).st_mode
    assert stat.S_IMODE(mode) == 0o600
    keeper = agent.vireod.connect("keeper", "Keeper-pass-1")
    ask = auth.HasPrivilegeOnEntity(datastore, keeper.content.sessionManager.currentSession.key,
                                    ["Datastore.Browse", "Datastore.FileManagement"])
    assert ask == [True, False]
    keeper.content.accountManager.ChangePassword("keeper", "Keeper-pass-1", "Keeper-pass-2")
    with pytest.raises(vim.fault.InvalidLogin):
        keeper.content.accountManager.ChangePassword("keeper", "wrong", "Keeper-pass-3")
    refused(lambda: keeper.content.accountManager.ChangePassword("root", "x", "y"), "Host.Local.ManageUserGroups")
    accounts.UpdateUser(vim.host.LocalAccountManager.AccountSpecification(id="keeper", password="Keeper-pass-3"))
    Disconnect(agent.vireod.connect("keeper", "Keeper-pass-3"))
    accounts.RemoveUser("keeper")
    with pytest.raises(vim.fault.NotAuthenticated):
        keeper.content.rootFolder.name  # its sessions ended with it
    with pytest.raises(vim.fault.InvalidLogin):
        agent.vireod.connect("keeper", "Keeper-pass-3")
    assert all(p.principal != "keeper" for p in auth.RetrieveAllPermissions())
    with pytest.raises(vim.fault.UserNotFound):
        accounts.RemoveUser("keeper")
    Disconnect(si)


def test_a_revoked_permission_takes_effect_on_the_next_call(si, agent):
    """vireod remembers who may do what between calls; every role, permission and inventory
    change must reach the very next call."""
    vm = create_vm(si, "revoke-target")
    auth = si.content.authorizationManager
    privilege = "VirtualMachine.Config.ChangeTracking"
    role = auth.AddAuthorizationRole("track-changes", [privilege])
    create_user(si, "revokee", "Revokee-pass-1")
    grant(si, vm, "revokee", role)
    user = agent.vireod.connect("revokee", "Revokee-pass-1")
    mine = as_user(user, vm)
    track = lambda enabled: mine.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=enabled))  # noqa: E731
    WaitForTask(track(True))
    assert visible(user) == ({"revoke-target"}, 1)
    # The role trades its privilege for another: the next call is refused; reading still works.
    auth.UpdateAuthorizationRole(role, "track-changes", ["VirtualMachine.Config.Annotation"])
    refused(lambda: track(False), privilege)
    assert mine.name == "revoke-target"
    auth.UpdateAuthorizationRole(role, "track-changes", [privilege])
    WaitForTask(track(False))
    # The permission revoked: the next call is refused and the VM is gone from the user's view.
    auth.RemoveEntityPermission(vm, "revokee", False)
    refused(lambda: track(True), privilege)
    refused(lambda: mine.name, "System.Read")
    assert visible(user) == (set(), 0)
    # Granted again (ReadOnly): seen at once, still not changeable.
    grant(si, vm, "revokee", READ_ONLY)
    assert visible(user) == ({"revoke-target"}, 1)
    refused(lambda: track(True), privilege)
    assert vm.config.changeTrackingEnabled is False
    Disconnect(user)
