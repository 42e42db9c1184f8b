"""Start ministack for tests and local runs, with these corrections.

1. Loopback only. ministack binds its HTTP gateway to BIND_HOST, but its
   MQTT-over-mTLS listener binds 0.0.0.0 whatever is configured. Tests and
   local runs must never listen beyond loopback, so every wildcard bind
   address is rewritten to 127.0.0.1.
2. IAM resources of three IoT actions. Under AUTH=true ministack evaluates
   DescribeCACertificate, AttachPolicy (and DetachPolicy) and
   AddThingToBillingGroup against resource "*", where AWS evaluates them
   against the CA certificate, the target certificate and the billing group.
   Least-privilege policies that name those ARNs (as the SAM template does)
   would be refused locally and allowed on AWS; this resolves the ARNs the way
   the Service Authorization Reference lists them. ListAttachedPolicies is
   left on "*": the reference lists no resource type for it.
3. S3 request context. ministack serves plain HTTP only, so every request
   would carry aws:SecureTransport=false and hit the credentials bucket's
   deny-non-TLS statement; requests are taken as arriving over TLS, as every
   SDK call to AWS does. And it omits the condition key
   s3:x-amz-server-side-encryption-aws-kms-key-id that AWS derives from the
   request header, so the bucket's deny-other-key statement would deny every
   put; it is supplied from the header.
4. Just-in-time provisioning. ministack stores a CA's registrationConfig but
   registers every device of an auto-registering CA the JITR way. AWS IoT
   applies the CA's template on the device's first connect instead, with
   parameters from the certificate's subject, as the role allows, and closes
   that connection. This does the same with ministack's own template engine
   (the one its fleet provisioning runs). Whether AWS also publishes the
   certificate-registered event for such a device is not documented: with
   ONBOARDING_JITP_EVENTS=1 it is published after the template ran, else not,
   so that tests cover both.
5. DeleteConnection. ministack's data plane lacks AWS IoT's DeleteConnection
   (`DELETE /connections/{clientId}`, 2025), which closes a client's MQTT
   connection at once; an emergency revocation relies on it. This closes the
   session the way ministack closes a session taken over by a duplicate
   client id, with AWS's disconnect reason API_INITIATED_DISCONNECT, cleaning
   the persistent session and suppressing the will message when asked;
   ResourceNotFoundException when no client of that id is connected.
"""

import asyncio
import hashlib
import logging
import os
import ssl
import json
import asyncio.base_events
import socket
import sys
import time

_WILDCARDS = (None, "", "0.0.0.0", "::", "*")
_LOOPBACK = "127.0.0.1"

_create_server = asyncio.base_events.BaseEventLoop.create_server


async def _loopback_create_server(self, protocol_factory, host=None, port=None, *args, **kwargs):
    # A pre-bound socket (hypercorn passes `sock=`) already went through the
    # patched bind() below.
    if kwargs.get("sock") is None and host in _WILDCARDS:
        host = _LOOPBACK
    return await _create_server(self, protocol_factory, host, port, *args, **kwargs)


asyncio.base_events.BaseEventLoop.create_server = _loopback_create_server


class _LoopbackSocket(socket.socket):
    def bind(self, address):
        if isinstance(address, tuple) and address and address[0] in _WILDCARDS:
            family_loopback = "::1" if self.family == socket.AF_INET6 else _LOOPBACK
            address = (family_loopback,) + tuple(address[1:])
        return super().bind(address)


socket.socket = _LoopbackSocket



def _correct_iot_resources():
    from ministack.core import iam_actions

    extract = iam_actions.extract_resource_arn

    def extract_resource_arn(service, method, path, headers, body, query_params, region, account_id):
        arn = extract(service, method, path, headers, body, query_params, region, account_id)
        if service != "iot" or arn != "*":
            return arn
        parts = [p for p in path.split("/") if p]
        try:
            data = json.loads(body or b"{}")
        except (ValueError, TypeError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        if len(parts) == 2 and parts[0] == "cacertificate":
            return f"arn:aws:iot:{region}:{account_id}:cacert/{parts[1]}"
        if len(parts) == 2 and parts[0] == "target-policies" and isinstance(data.get("target"), str):
            return data["target"]
        if parts == ["billing-groups", "addThingToBillingGroup"] and isinstance(data.get("billingGroupName"), str):
            return f"arn:aws:iot:{region}:{account_id}:billinggroup/{data['billingGroupName']}"
        return arn

    iam_actions.extract_resource_arn = extract_resource_arn


def _correct_s3_request_context():
    from ministack.core import iam_actions, iam_evaluator

    pin = iam_evaluator.pin_request_origin
    iam_evaluator.pin_request_origin = lambda source_ip, _secure: pin(source_ip, True)

    object_context = iam_actions._s3_object_context

    def _s3_object_context(iam_action, query_params, path, headers):
        context = object_context(iam_action, query_params, path, headers)
        key_id = headers.get("x-amz-server-side-encryption-aws-kms-key-id")
        if iam_action == "s3:PutObject" and key_id:
            context["s3:x-amz-server-side-encryption-aws-kms-key-id"] = key_id
        return context

    iam_actions._s3_object_context = _s3_object_context


# The JITP parameters AWS IoT takes from a certificate's subject, by OID.
_SUBJECT_PARAMETERS = {
    "2.5.4.3": "CommonName",
    "2.5.4.10": "Organization",
    "2.5.4.11": "OrganizationalUnit",
    "2.5.4.5": "SerialNumber",
    "2.5.4.6": "Country",
    "2.5.4.8": "StateName",
    "2.5.4.46": "DistinguishedNameQualifier",
}


def _subject_parameters(cert_pem):
    from cryptography import x509

    subject = x509.load_pem_x509_certificate(cert_pem.encode("utf-8")).subject
    parameters = {}
    for attribute in subject:
        name = _SUBJECT_PARAMETERS.get(attribute.oid.dotted_string)
        if name and f"AWS::IoT::Certificate::{name}" not in parameters:
            parameters[f"AWS::IoT::Certificate::{name}"] = attribute.value
    return parameters


def _emulate_jitp():
    from ministack.services import iot

    log = logging.getLogger("onboarding.jitp")
    register = iot._mtls_auto_register
    publish_events = os.environ.get("ONBOARDING_JITP_EVENTS") == "1"

    async def run_template(account_id, region, ca_id, record, peername):
        """Applies the CA's template to a PENDING_ACTIVATION certificate; False without one."""
        with iot.request_scope(account_id, region):
            config = (iot._ca_certificates.get(ca_id) or {}).get("registrationConfig") or {}
            body = config.get("templateBody")
            if not body:
                return False
            iot._certificates[record["certificateId"]] = record
            template = {
                "templateName": f"jitp-{ca_id[:12]}",
                "defaultVersionId": 1,
                "versions": {"1": iot._provisioning_template_version(1, body, time.time())},
            }
            cert_id = record["certificateId"]
            try:
                parameters = _subject_parameters(record["certificatePem"])
                plan = iot._provisioning_plan(template, parameters, cert_id)
                thing = await iot._apply_provisioning_plan(plan, record, config.get("roleArn") or "")
                log.info("JITP: certificate %s provisioned as %s under CA %s", cert_id, thing, ca_id)
            except iot._ProvisioningRejected as e:
                # The certificate stays PENDING_ACTIVATION: the device does not get in.
                log.warning("JITP: certificate %s under CA %s not provisioned: %s", cert_id, ca_id, e.reply[1])
            except Exception:  # noqa: BLE001 - an emulator bug must not pass for a JITR device
                log.exception("JITP: certificate %s under CA %s: the template could not be applied", cert_id, ca_id)
            if publish_events:
                source_ip = peername[0] if isinstance(peername, tuple) and peername else None
                await iot._publish_certificate_registered(
                    account_id, region, iot._certificates[cert_id], source_ip, None
                )
        return True

    async def auto_register(der, peername, server_name=None):
        cert_id = hashlib.sha256(der).hexdigest()
        held = iot._mtls_active_registrations(cert_id, status=None)
        if len(held) == 1 and held[0][2].get("status") == "PENDING_ACTIVATION":
            # JITP failed on an earlier connect: AWS tries the template again.
            account_id, region, record = held[0]
            ca_id = record.get("caCertificateId")
            if iot._mtls_auto_registering_ca(account_id, region, ca_id, server_name) is not None and await run_template(
                account_id, region, ca_id, record, peername
            ):
                return True
        if held:
            return await register(der, peername, server_name)
        cert_pem = ssl.DER_cert_to_PEM_cert(der)
        signers = await asyncio.to_thread(iot._mtls_auto_registering_signers, cert_pem, server_name)
        if len(signers) == 1:
            account_id, region, ca_id = signers[0]
            with iot.request_scope(account_id, region):
                record = iot._certificate_record(cert_id, cert_pem, "PENDING_ACTIVATION", ca_id)
            if await run_template(account_id, region, ca_id, record, peername):
                return True
        return await register(der, peername, server_name)

    iot._mtls_auto_register = auto_register


def _emulate_delete_connection():
    from urllib.parse import unquote

    from ministack.core.responses import error_response_json, get_account_id, get_region, json_response
    from ministack.services import iot, iot_data

    handle = iot_data.handle_request

    async def handle_request(method, path, headers, body, query_params):
        if method != "DELETE" or not path.startswith("/connections/"):
            return await handle(method, path, headers, body, query_params)
        qp = {k: (v[0] if isinstance(v, list) else v) for k, v in query_params.items()}
        client_id = unquote(path[len("/connections/"):])
        key = (get_account_id(), get_region(), client_id)
        session = iot._connected_clients.get(key)
        if session is None:
            return error_response_json("ResourceNotFoundException", f"No connection for client {client_id}", 404)
        if str(qp.get("preventWillMessage", "")).lower() == "true":
            session._will_topic = None
        session._forced_disconnect_reason = "API_INITIATED_DISCONNECT"
        try:
            await session._send({"type": "websocket.close", "code": 1000})
        except Exception:  # noqa: BLE001 - already closed
            pass
        await session.cleanup()
        iot._connected_clients.pop(key, None)
        if str(qp.get("cleanSession", "")).lower() == "true":
            iot._persistent_sessions.pop(key, None)
        logging.getLogger("onboarding.connections").info("DeleteConnection: client %s disconnected", client_id)
        return json_response({})

    iot_data.handle_request = handle_request


if __name__ == "__main__":
    # Before ministack.app is imported: it binds pin_request_origin at import.
    _correct_iot_resources()
    _correct_s3_request_context()
    _emulate_jitp()
    _emulate_delete_connection()
    from ministack.app import main

    sys.argv = ["ministack"]
    main()
