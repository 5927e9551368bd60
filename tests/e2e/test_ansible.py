"""Stock Ansible community.vmware modules against vireod, unmodified (issues 14–17 add theirs)."""
from ansible_modules import run_module


def test_vmware_about_info_reports_a_host_agent(vireod):
    result = run_module(vireod, "vmware_about_info")
    assert not result.get("failed"), result.get("msg")
    about = result["about_info"]
    assert about["product_name"] == "Vireo"
    assert about["api_type"] == "HostAgent"
