"""Check the emulator's SMS behaviour with the official `twilio` Python library.

Run by crates/nixflex-testkit/tests/twilio_official_client.rs
(`official_twilio_library_reads_message_statuses_and_validates_sms_webhooks`), after the Rust
side created messages and let the emulator send their status callbacks and an inbound text.
Environment:

  TWILIO_EMULATOR_BASE_URL  http://127.0.0.1:<port>
  TWILIO_ACCOUNT_SID        AC... of an emulated account
  TWILIO_AUTH_TOKEN         its auth token
  SMS_EXPECTED              JSON {sid: {"status", "error_code", "direction"}} to fetch and compare
  SMS_WEBHOOKS              JSON [{"url", "params": [[name, value], ...], "signature"}] the
                            emulator sent (status callbacks and the inbound-text webhook)

Any failed check raises (non-zero exit). Exit status 3 means the `twilio` package is missing.
"""

import json
import os
import sys

try:
    from twilio.request_validator import RequestValidator
    from twilio.rest import Client
except ImportError as error:  # pragma: no cover - environment problem
    print(f"the PyPI package 'twilio' is not importable ({error})", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(__file__))
from twilio_official_client import EmulatorHttpClient, MultiParams, expect  # noqa: E402


def main():
    env = os.environ
    sid, token = env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"]
    client = Client(sid, token, http_client=EmulatorHttpClient(env["TWILIO_EMULATOR_BASE_URL"]))
    for message_sid, want in json.loads(env["SMS_EXPECTED"]).items():
        message = client.messages(message_sid).fetch()
        expect(message.status == want["status"], f"{message_sid}: status {message.status}")
        expect(message.error_code == want["error_code"], f"{message_sid}: error_code {message.error_code}")
        expect(message.direction == want["direction"], f"{message_sid}: direction {message.direction}")
    validator = RequestValidator(token)
    webhooks = json.loads(env["SMS_WEBHOOKS"])
    expect(len(webhooks) > 0, "no webhooks to check")
    for hook in webhooks:
        params = MultiParams(hook["params"])
        expect(
            validator.validate(hook["url"], params, hook["signature"]),
            f"the official RequestValidator refused the emulator's signature for {hook['url']}",
        )
    print(json.dumps({"checked_messages": len(json.loads(env["SMS_EXPECTED"])), "checked_webhooks": len(webhooks)}))


if __name__ == "__main__":
    main()
