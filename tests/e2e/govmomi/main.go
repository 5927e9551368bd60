// Command govmomi-smoke drives vireod with govmomi (built offline from Debian's
// golang-github-vmware-govmomi-dev in GOPATH mode): it logs in, checks the host's about info,
// lists VMs through a ContainerView, reads host and datastore properties with
// RetrievePropertiesEx, waits for an update with WaitForUpdatesEx, and logs out.
// Usage: govmomi-smoke https://root:PASSWORD@127.0.0.1:PORT/sdk
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: govmomi-smoke URL")
	}
	u, err := url.Parse(os.Args[1])
	if err != nil {
		fail("bad url: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		fail("login: %v", err)
	}
	about := client.ServiceContent.About
	if about.ApiType != "HostAgent" {
		fail("apiType %q", about.ApiType)
	}
	fmt.Printf("about: %s api %s\n", about.FullName, about.ApiVersion)

	manager := view.NewManager(client.Client)
	vms, err := manager.CreateContainerView(ctx, client.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		fail("CreateContainerView: %v", err)
	}
	var machines []mo.VirtualMachine
	if err := vms.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "runtime.powerState", "config.uuid"}, &machines); err != nil {
		fail("Retrieve VMs: %v", err)
	}
	if len(machines) != 1 || machines[0].Name != "e2e vm" || machines[0].Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		fail("unexpected VMs: %+v", machines)
	}
	fmt.Printf("vm: %s %s %s\n", machines[0].Name, machines[0].Runtime.PowerState, machines[0].Config.Uuid)
	_ = vms.Destroy(ctx)

	collector := property.DefaultCollector(client.Client)
	var host mo.HostSystem
	hostRef := types.ManagedObjectReference{Type: "HostSystem", Value: "ha-host"}
	if err := collector.RetrieveOne(ctx, hostRef, []string{"name", "summary", "hardware.memorySize"}, &host); err != nil {
		fail("host: %v", err)
	}
	if host.Summary.Runtime.PowerState != types.HostSystemPowerStatePoweredOn || host.Hardware != nil && host.Hardware.MemorySize <= 0 {
		fail("unexpected host: %+v", host.Summary.Runtime)
	}
	fmt.Printf("host: %s %s %d MiB\n", host.Name, host.Summary.Hardware.CpuModel, host.Summary.Hardware.MemorySize>>20)

	var entities []mo.ManagedEntity
	all, err := manager.CreateContainerView(ctx, client.ServiceContent.RootFolder, nil, true)
	if err != nil {
		fail("CreateContainerView all: %v", err)
	}
	if err := all.Retrieve(ctx, []string{"ManagedEntity"}, []string{"name", "parent"}, &entities); err != nil {
		fail("Retrieve entities: %v", err)
	}
	fmt.Printf("entities: %d\n", len(entities))

	var ds []mo.Datastore
	if err := all.Retrieve(ctx, []string{"Datastore"}, []string{"summary"}, &ds); err != nil || len(ds) != 1 || ds[0].Summary.Capacity <= 0 {
		fail("datastores: %v %+v", err, ds)
	}
	fmt.Printf("datastore: %s capacity %d free %d\n", ds[0].Summary.Name, ds[0].Summary.Capacity, ds[0].Summary.FreeSpace)

	seen := 0
	err = property.Wait(ctx, collector, *client.ServiceContent.EventManager, []string{"latestEvent"}, func(changes []types.PropertyChange) bool {
		seen += len(changes)
		return true
	})
	if err != nil || seen == 0 {
		fail("WaitForUpdatesEx: %v (changes %d)", err, seen)
	}
	fmt.Println("wait: saw latestEvent")

	if err := client.Logout(ctx); err != nil {
		fail("logout: %v", err)
	}
	fmt.Println("OK")
}
