"""A user connects with pyVmomi, reads what the host is, logs in and out; wrong passwords and
calls without a session are refused with the faults vSphere uses."""
import pytest
from pyVim.connect import Disconnect
from pyVmomi import SoapStubAdapter, vim, vmodl


def test_smartconnect_reads_esxi_style_about(si):
    about = si.content.about
    assert about.apiType == "HostAgent"
    assert about.apiVersion == "8.0.3.0"
    assert about.name == "Vireo"
    assert si.CurrentTime() is not None


def test_wrong_password_is_invalid_login(vireod):
    with pytest.raises(vim.fault.InvalidLogin):
        vireod.connect(pwd="not-the-password")
    with pytest.raises(vim.fault.InvalidLogin):
        vireod.connect(user="nobody")


def test_call_without_session_is_not_authenticated(vireod):
    stub = SoapStubAdapter(host=vireod.host, port=vireod.port, version="vim.version.v8_0_3_0",
                           sslContext=__import__("ssl")._create_unverified_context())
    si = vim.ServiceInstance("ServiceInstance", stub)
    content = si.RetrieveContent()  # anonymous
    with pytest.raises(vim.fault.NotAuthenticated):
        _ = content.rootFolder.name
    with pytest.raises(vim.fault.NotAuthenticated):
        content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    # RetrievePropertiesEx itself is anonymous, but what it reads is not.
    PC = vmodl.query.PropertyCollector
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=content.rootFolder)],
                         propSet=[PC.PropertySpec(type=vim.Folder, pathSet=["name", "childEntity"])])
    result = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    contents = result.objects[0]
    assert not contents.propSet
    assert {m.path for m in contents.missingSet} == {"name", "childEntity"}
    assert all(isinstance(m.fault, vim.fault.NotAuthenticated) for m in contents.missingSet)


def test_current_session_and_logout_end_access(vireod):
    si = vireod.connect()
    session = si.content.sessionManager.currentSession
    assert session.userName == "root"
    assert si.content.sessionManager.SessionIsActive(session.key, "root")
    stub = si._stub
    Disconnect(si)
    with pytest.raises(vim.fault.NotAuthenticated):
        _ = vim.Folder("ha-folder-root", stub).name


def test_session_objects_die_with_the_session(vireod):
    first = vireod.connect()
    view = first.content.viewManager.CreateContainerView(first.content.rootFolder, [vim.VirtualMachine], True)
    other = vireod.connect()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        _ = vim.ContainerView(view._moId, other._stub).view
    Disconnect(first)
    Disconnect(other)


def test_terminate_another_session(vireod):
    admin = vireod.connect()
    victim = vireod.connect()
    manager = admin.content.sessionManager
    victim_key = victim.content.sessionManager.currentSession.key
    assert victim_key in [s.key for s in manager.sessionList]
    manager.TerminateSession([victim_key])
    assert victim_key not in [s.key for s in manager.sessionList]
    with pytest.raises(vim.fault.NotAuthenticated):
        _ = victim.content.rootFolder.name
    with pytest.raises(vim.fault.NotFound):
        manager.SessionIsActive(victim_key, "root")
    Disconnect(admin)


def test_list_view_add_remove_and_unresolved(si):
    content = si.content
    vm = content.searchIndex.FindByInventoryPath("ha-datacenter/vm/e2e vm")
    view = content.viewManager.CreateListView([vm])
    assert view.view == [vm]
    unresolved = view.ModifyListView(add=[vim.HostSystem("ha-host"), vim.VirtualMachine("404")], remove=[vm])
    assert [u._moId for u in unresolved] == ["404"]
    assert [v._moId for v in view.view] == ["ha-host"]
    view.DestroyView()
