"""Hostile or sloppy clients: garbage, truncated and oversized bodies, unknown methods, wrong
argument types and unknown objects get SOAP faults, and vireod keeps serving."""
import re

ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{}</soapenv:Body></soapenv:Envelope>')
CONTENT = ENVELOPE.format('<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance'
                          '</_this></RetrieveServiceContent>')


def fault_type(body):
    match = re.search(r'<detail><(\w+)Fault xmlns="urn:vim25" xsi:type="(\w+)"', body)
    assert match, body
    assert match.group(1) == match.group(2)
    return match.group(2)


def test_garbage_truncated_and_oversized_bodies(vireod):
    for body in [b"garbage", b"", CONTENT[:len(CONTENT) // 2].encode(), b"<a><b></a>", "\u00e9".encode("latin-1")]:
        status, text = vireod.post(body)
        assert status == 500 and fault_type(text) == "InvalidRequest", (body, text)
    status, text = vireod.post(b"<x>" + b"a" * (9 * 1024 * 1024) + b"</x>")
    assert status == 500 and fault_type(text) == "InvalidRequest"
    status, text = vireod.post(CONTENT.encode())
    assert status == 200 and "<apiType>HostAgent</apiType>" in text


def test_unknown_method_wrong_type_unknown_object(vireod):
    status, text = vireod.post(ENVELOPE.format('<Frobnicate xmlns="urn:vim25"><_this type="Folder">ha-folder-root</_this></Frobnicate>').encode())
    assert status == 500 and fault_type(text) == "MethodNotFound"
    status, text = vireod.post(ENVELOPE.format('<Login xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this>'
                                               '<userName>root</userName><password>x</password></Login>').encode())
    assert status == 500 and fault_type(text) == "InvalidLogin"
    status, text = vireod.post(ENVELOPE.format('<Login xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this>'
                                               '<userName>root</userName><password>x</password></Login>').encode())
    assert status == 500 and fault_type(text) == "MethodNotFound"
    status, text = vireod.post(ENVELOPE.format('<RetrieveServiceContent xmlns="urn:vim25"><_this type="ServiceInstance">nope'
                                               '</_this></RetrieveServiceContent>').encode())
    assert status == 500 and fault_type(text) == "ManagedObjectNotFound"
    status, text = vireod.post(ENVELOPE.format('<CreateContainerView xmlns="urn:vim25"><_this type="ViewManager">ViewManager</_this>'
                                               '<container type="Folder">ha-folder-root</container><recursive>perhaps</recursive>'
                                               '</CreateContainerView>').encode())
    assert status == 500 and fault_type(text) == "InvalidArgument"


def test_old_client_versions_get_old_shapes(vireod):
    status, text = vireod.post(CONTENT.encode(), headers={"SOAPAction": '"urn:vim25/6.5"'})
    assert status == 200 and "<patchLevel>" not in text
    status, text = vireod.post(CONTENT.encode(), headers={"SOAPAction": '"urn:vim25/9.9.9.9"'})
    assert status == 200 and "<patchLevel>0</patchLevel>" in text


def test_large_responses_are_gzipped_for_clients_that_accept_it(vireod):
    import gzip
    import ssl
    import urllib.request
    si = vireod.connect()
    cookie = si._stub.cookie
    body = ENVELOPE.format('<Fetch xmlns="urn:vim25"><_this type="AuthorizationManager">ha-authmgr</_this>'
                           '<prop>privilegeList</prop></Fetch>').encode()
    request = urllib.request.Request(f"https://{vireod.host}:{vireod.port}/sdk", data=body, method="POST",
                                     headers={"SOAPAction": '"urn:vim25/8.0.3.0"', "Cookie": cookie,
                                              "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=30) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(response.read()).decode()
    assert 'xsi:type="ArrayOfAuthorizationPrivilege"' in text
    from pyVim.connect import Disconnect
    Disconnect(si)


def test_characters_xml_forbids_are_refused_and_never_echoed(vireod):
    import xml.etree.ElementTree as ElementTree
    for name in ["a&#0;b", "a\x00b", "a&#27;b", "a\x07b"]:
        body = ENVELOPE.format('<MakeDirectory xmlns="urn:vim25"><_this type="FileManager">FileManager</_this>'
                               f'<name>[datastore1] {name}</name></MakeDirectory>')
        status, text = vireod.post(body.encode())
        assert status == 500 and fault_type(text) == "InvalidRequest", (name, text)
        ElementTree.fromstring(text.encode())
    status, text = vireod.post(CONTENT.encode())
    assert status == 200
