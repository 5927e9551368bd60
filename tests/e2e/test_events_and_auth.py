"""A user reads what happened and what they may do: QueryEvents, an event history collector,
tasks, roles, privileges and permissions."""
from pyVim.connect import Disconnect
from pyVmomi import vim


def test_query_events_and_history_collector(si, vireod):
    Disconnect(vireod.connect())  # a login and a logout on record
    manager = si.content.eventManager
    events = manager.QueryEvents(vim.event.EventFilterSpec(eventTypeId=["UserLoginSessionEvent"]))
    assert events and all(isinstance(e, vim.event.UserLoginSessionEvent) for e in events)
    assert events[0].key >= events[-1].key, "newest first"
    assert isinstance(manager.latestEvent, vim.event.Event)
    collector = manager.CreateCollectorForEvents(vim.event.EventFilterSpec(maxCount=5))
    assert collector.latestPage
    collector.RewindCollector()
    first = collector.ReadNextEvents(2)
    assert len(first) == 2 and first[0].key < first[1].key
    collector.DestroyCollector()


def test_task_manager_and_task_collector(si):
    manager = si.content.taskManager
    assert manager.maxCollector > 0
    collector = manager.CreateCollectorForTasks(vim.TaskFilterSpec())
    assert collector.latestPage == []
    collector.DestroyCollector()


def test_roles_privileges_and_permissions(si):
    auth = si.content.authorizationManager
    roles = {r.name: r for r in auth.roleList}
    assert roles["Admin"].roleId == -1 and roles["ReadOnly"].roleId == -2
    privileges = {p.privId for p in auth.privilegeList}
    assert {"VirtualMachine.Interact.PowerOn", "System.View", "Sessions.TerminateSession"} <= privileges
    key = si.content.sessionManager.currentSession.key
    result = auth.HasPrivilegeOnEntities([si.content.rootFolder], key, ["System.View", "VirtualMachine.Interact.PowerOn"])
    assert all(p.isGranted for p in result[0].privAvailability)
    assert auth.RetrieveAllPermissions()[0].principal == "root"
