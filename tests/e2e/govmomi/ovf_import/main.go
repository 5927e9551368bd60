// Command govmomi-import deploys an OVF package into vireod the way govc import.ovf does it
// with govmomi: OvfManager.CreateImportSpec, ResourcePool.ImportVApp, nfc.Lease.Wait, the
// lease updater reporting progress while each file item is uploaded with Lease.Upload, then
// Lease.Complete. With "abort" it aborts the ready lease with a SystemError instead and prints
// the fault the lease then holds in its `error` property.
// Usage: govmomi-import URL OVF NAME deploy|abort
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/ovf"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

// placement finds the first datacenter's VM folder, resource pool and datastore.
func placement(ctx context.Context, client *govmomi.Client) (types.ManagedObjectReference, types.ManagedObjectReference, types.ManagedObjectReference) {
	pc := property.DefaultCollector(client.Client)
	var root mo.Folder
	if err := pc.RetrieveOne(ctx, client.ServiceContent.RootFolder, []string{"childEntity"}, &root); err != nil || len(root.ChildEntity) == 0 {
		fail("root folder: %v", err)
	}
	var dc mo.Datacenter
	if err := pc.RetrieveOne(ctx, root.ChildEntity[0], []string{"vmFolder", "hostFolder", "datastore"}, &dc); err != nil || len(dc.Datastore) == 0 {
		fail("datacenter: %v", err)
	}
	var hosts mo.Folder
	if err := pc.RetrieveOne(ctx, dc.HostFolder, []string{"childEntity"}, &hosts); err != nil || len(hosts.ChildEntity) == 0 {
		fail("host folder: %v", err)
	}
	var compute mo.ComputeResource
	if err := pc.RetrieveOne(ctx, hosts.ChildEntity[0], []string{"resourcePool"}, &compute); err != nil || compute.ResourcePool == nil {
		fail("compute resource: %v", err)
	}
	return dc.VmFolder, *compute.ResourcePool, dc.Datastore[0]
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: govmomi-import URL OVF NAME deploy|abort")
	}
	u, err := soap.ParseURL(os.Args[1])
	if err != nil {
		fail("bad url: %v", err)
	}
	ovfPath, name, mode := os.Args[2], os.Args[3], os.Args[4]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	client, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		fail("login: %v", err)
	}
	descriptor, err := os.ReadFile(ovfPath)
	if err != nil {
		fail("reading the OVF: %v", err)
	}
	folder, pool, datastore := placement(ctx, client)
	params := types.OvfCreateImportSpecParams{EntityName: name, DiskProvisioning: "thin"}
	spec, err := ovf.NewManager(client.Client).CreateImportSpec(ctx, string(descriptor), pool, datastore, params)
	if err != nil {
		fail("CreateImportSpec: %v", err)
	}
	if len(spec.Error) > 0 {
		fail("CreateImportSpec errors: %s", spec.Error[0].LocalizedMessage)
	}
	lease, err := object.NewResourcePool(client.Client, pool).ImportVApp(ctx, spec.ImportSpec, object.NewFolder(client.Client, folder), nil)
	if err != nil {
		fail("ImportVApp: %v", err)
	}
	info, err := lease.Wait(ctx, spec.FileItem)
	if err != nil {
		fail("lease: %v", err)
	}
	if mode == "abort" {
		fault := &types.LocalizedMethodFault{Fault: &types.SystemError{Reason: "govmomi gave up"}, LocalizedMessage: "upload abandoned"}
		if err := lease.Abort(ctx, fault); err != nil {
			fail("HttpNfcLeaseAbort: %v", err)
		}
		var aborted mo.HttpNfcLease
		if err := property.DefaultCollector(client.Client).RetrieveOne(ctx, lease.Reference(), []string{"state", "error"}, &aborted); err != nil {
			fail("reading the lease: %v", err)
		}
		if aborted.Error == nil {
			fail("lease %s has no error", aborted.State)
		}
		reason := ""
		if e, ok := aborted.Error.Fault.(*types.SystemError); ok {
			reason = e.Reason
		}
		fmt.Printf("aborted: %s %T %q %q\n", aborted.State, aborted.Error.Fault, reason, aborted.Error.LocalizedMessage)
		fmt.Println("OK")
		return
	}
	updater := lease.StartUpdater(ctx, info)
	for _, item := range info.Items {
		file, err := os.Open(filepath.Join(filepath.Dir(ovfPath), item.Path))
		if err != nil {
			fail("opening %s: %v", item.Path, err)
		}
		stat, _ := file.Stat()
		err = lease.Upload(ctx, item, file, soap.Upload{ContentLength: stat.Size()})
		file.Close()
		if err != nil {
			fail("uploading %s: %v", item.Path, err)
		}
	}
	updater.Done()
	if err := lease.Complete(ctx); err != nil {
		fail("HttpNfcLeaseComplete: %v", err)
	}
	fmt.Printf("vm: %s %s\n", name, info.Entity.Value)
	fmt.Println("OK")
}
