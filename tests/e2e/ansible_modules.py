"""Runs one stock Ansible module (community.vmware, from the PyPI `ansible` package that
scripts/setup/20-python-venv.sh installs into .cache/venv) against a test vireod; returns its result.

Modules run unmodified as an admin would run them: ad hoc on localhost, with the venv's Python
(which has pyVmomi) as the module interpreter and the json stdout callback, so the test reads the
module's own result dictionary (changed, failed, msg and its facts).
"""
import json
import os
import subprocess
import sys

from conftest import ROOT_PASSWORD

VENV_BIN = os.path.dirname(sys.executable)


def run_module(server, module, process_timeout=600, **args):
    """Runs `community.vmware.<module>` with `args` against `server`; returns its result dict.
    `process_timeout` bounds the ansible process (a module's own `timeout` goes in `args`)."""
    connection = {"hostname": server.host, "port": server.port, "username": "root",
                  "password": ROOT_PASSWORD, "validate_certs": False}
    command = [os.path.join(VENV_BIN, "ansible"), "localhost", "-m", f"community.vmware.{module}",
               "-a", json.dumps({**connection, **args})]
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", PYTHONWARNINGS="ignore")
    done = subprocess.run(command, capture_output=True, text=True, timeout=process_timeout, env=env)
    try:
        report = json.loads(done.stdout)
        return report["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as error:
        raise AssertionError(f"ansible {module} gave no result ({error}); exit {done.returncode}\n"
                             f"stdout: {done.stdout[-4000:]}\nstderr: {done.stderr[-4000:]}")
