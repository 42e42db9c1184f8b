"""Start ministack for tests and local runs, with two corrections.

1. Loopback only. ministack binds its HTTP gateway to BIND_HOST, but its
   MQTT-over-mTLS listener binds 0.0.0.0 whatever is configured. Tests and
   local runs must never listen beyond loopback, so every wildcard bind
   address is rewritten to 127.0.0.1.
2. IAM resources of four IoT actions. Under AUTH=true ministack evaluates
   DescribeCACertificate, AttachPolicy (and DetachPolicy),
   AddThingToBillingGroup and ListAttachedPolicies against resource "*", where
   AWS evaluates them against the CA certificate, the target certificate, the
   billing group and the target. Least-privilege policies that
   name those ARNs (as the SAM template does) would be refused locally and
   allowed on AWS; this resolves the ARNs the way AWS documents them.
3. S3 request context. ministack serves plain HTTP only, so every request
   would carry aws:SecureTransport=false and hit the credentials bucket's
   deny-non-TLS statement; requests are taken as arriving over TLS, as every
   SDK call to AWS does. And it omits the condition key
   s3:x-amz-server-side-encryption-aws-kms-key-id that AWS derives from the
   request header, so the bucket's deny-other-key statement would deny every
   put; it is supplied from the header.
"""

import asyncio
import json
import asyncio.base_events
import socket
import sys
import urllib.parse

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
        if path.lstrip("/").startswith("attached-policies/"):
            return urllib.parse.unquote(path.lstrip("/")[len("attached-policies/"):])
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


if __name__ == "__main__":
    # Before ministack.app is imported: it binds pin_request_origin at import.
    _correct_iot_resources()
    _correct_s3_request_context()
    from ministack.app import main

    sys.argv = ["ministack"]
    main()
