"""A user waits for changes: WaitForUpdatesEx with versions, timeouts and a change made by
another client; the legacy CreateFilter + WaitForUpdates path pyVim's WaitForTask uses."""
import threading

from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


def latest_event_filter(si, collector):
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=si.content.eventManager)],
                         propSet=[PC.PropertySpec(type=vim.EventManager, pathSet=["latestEvent"])])
    return collector.CreateFilter(spec, partialUpdates=False)


def test_wait_for_updates_ex_sees_another_clients_login(si, vireod):
    collector = si.content.propertyCollector.CreatePropertyCollector()
    latest_event_filter(si, collector)
    first = collector.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0))
    assert first.filterSet[0].objectSet[0].kind == "enter"
    assert collector.WaitForUpdatesEx(first.version, PC.WaitOptions(maxWaitSeconds=1)) is None

    other = []
    waiter = threading.Timer(0.5, lambda: other.append(vireod.connect()))
    waiter.start()
    update = collector.WaitForUpdatesEx(first.version, PC.WaitOptions(maxWaitSeconds=60))
    waiter.join()
    assert update is not None and int(update.version) > int(first.version)
    change = update.filterSet[0].objectSet[0]
    assert change.kind == "modify"
    event = change.changeSet[0].val
    assert isinstance(event, vim.event.UserLoginSessionEvent)
    assert event.userName == "root"
    Disconnect(other[0])
    collector.Destroy()


def test_legacy_wait_for_updates_and_check_for_updates(si):
    pc = si.content.propertyCollector
    property_filter = latest_event_filter(si, pc)
    update = pc.WaitForUpdates()
    assert update.filterSet[0].filter == property_filter
    assert pc.CheckForUpdates(update.version) is None
    assert property_filter in pc.filter
    property_filter.Destroy()
    assert property_filter not in pc.filter


def test_cancel_wait_for_updates(si):
    collector = si.content.propertyCollector.CreatePropertyCollector()
    latest_event_filter(si, collector)
    version = collector.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0)).version
    failure = []

    def wait():
        try:
            collector.WaitForUpdatesEx(version, PC.WaitOptions())
        except vmodl.fault.RequestCanceled as error:
            failure.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    for _ in range(200):
        vim.PropertyCollector(collector._moId, si._stub).CancelWaitForUpdates()
        thread.join(timeout=0.1)
        if not thread.is_alive():
            break
    assert failure, "the wait ended with RequestCanceled"
    collector.Destroy()


def test_max_object_updates_truncates_and_delivers_the_rest(si):
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.ManagedEntity], True)
    collector = content.propertyCollector.CreatePropertyCollector()
    traverse = PC.TraversalSpec(name="view", type=vim.ContainerView, path="view", skip=False)
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                         propSet=[PC.PropertySpec(type=vim.ManagedEntity, pathSet=["name"])])
    collector.CreateFilter(spec, partialUpdates=False)
    seen, version, rounds = [], "", 0
    while True:
        update = collector.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=0, maxObjectUpdates=3))
        if update is None:
            break
        version, rounds = update.version, rounds + 1
        objects = [o for f in update.filterSet or [] for o in f.objectSet]
        assert len(objects) <= 3
        seen.extend(o.obj for o in objects)
        if not update.truncated:
            break
    assert rounds >= 3 and len(seen) == len(set(seen)) == len(view.view)
    collector.Destroy()
    view.Destroy()


def test_objects_leaving_a_filter(si):
    content = si.content
    pc = content.propertyCollector
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view)],
                         propSet=[PC.PropertySpec(type=vim.ContainerView, pathSet=["view"])])
    property_filter = pc.CreateFilter(spec, partialUpdates=False)
    first = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0))
    assert first.filterSet[0].objectSet[0].kind == "enter"
    view.DestroyView()
    update = pc.WaitForUpdatesEx(first.version, PC.WaitOptions(maxWaitSeconds=30))
    assert update.filterSet[0].objectSet[0].kind == "leave"
    property_filter.Destroy()
    gone = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=view)], propSet=spec.propSet)
    try:
        pc.CreateFilter(gone, partialUpdates=False)
        raise AssertionError("a filter on a destroyed object was accepted")
    except vmodl.fault.ManagedObjectNotFound:
        pass
