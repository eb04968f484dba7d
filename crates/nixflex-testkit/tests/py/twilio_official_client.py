"""Drive nixflex-testkit's TwilioEmulator with the official `twilio` Python library.

Run by crates/nixflex-testkit/tests/twilio_official_client.rs, which starts the emulator and
passes, through the environment:

  TWILIO_EMULATOR_BASE_URL   http://127.0.0.1:<port>
  TWILIO_ACCOUNT_SID         AC... of an emulated account
  TWILIO_AUTH_TOKEN          its auth token
  TWILIO_NUMBER              an E.164 number of that account
  TWILIO_NUMBER_SID          its PN... SID
  TWILIO_EXTRA_NUMBERS       how many other numbers the account has
  TWILIO_LIVE_CALL_SID       an inbound call of that account that is in progress
  RECORDING_STATUS_CALLBACK  the RecordingStatusCallback to give the recording it starts
  TWILIO_BUSY_CALLEE         a number whose scripted callee is busy
  CALL_STATUS_CALLBACK       the StatusCallback to give the call to it
  NIXFLEX_SIGNED_URL         a webhook URL ...
  NIXFLEX_SIGNED_PARAMS      ... its form params, JSON [[name, value], ...] (names may repeat) ...
  NIXFLEX_SIGNATURE          ... and the signature nixflex_providers computed for them
  NIXFLEX_JSON_URL           a URL carrying bodySHA256 ...
  NIXFLEX_JSON_BODY          ... the JSON body it hashes ...
  NIXFLEX_JSON_SIGNATURE     ... and nixflex_providers' signature of that URL

Any failed check raises (non-zero exit, traceback on stderr). On success the script prints one
JSON object on stdout with what the Rust side checks in turn: signatures computed by
`twilio.request_validator.RequestValidator` and TwiML rendered by `twilio.twiml`.
Exit status 3 means the `twilio` package is missing.
"""

import datetime
import json
import os
import sys
import time

try:
    from twilio.base.exceptions import TwilioException, TwilioRestException
    from twilio.http.http_client import TwilioHttpClient
    from twilio.request_validator import RequestValidator
    from twilio.rest import Client
    from twilio.twiml.messaging_response import MessagingResponse
    from twilio.twiml.voice_response import Connect, Dial, VoiceResponse
except ImportError as error:  # pragma: no cover - environment problem
    print(
        f"the PyPI package 'twilio' is not importable ({error}); install it with "
        "`pip install twilio`",
        file=sys.stderr,
    )
    sys.exit(3)

TWILIO_API = "https://api.twilio.com"


class EmulatorHttpClient(TwilioHttpClient):
    """Sends every request the library builds for https://api.twilio.com to the emulator.

    The library has no setting for an arbitrary API host (`edge`/`region` only rename
    *.twilio.com hosts), but `twilio.rest.Client(http_client=...)` accepts any `HttpClient`;
    rewriting the URL here keeps everything else (auth, form encoding, headers, paging through
    `next_page_uri`, error handling) exactly as in production.
    """

    def __init__(self, base_url):
        super().__init__(timeout=10)
        self.base_url = base_url.rstrip("/")
        self.requested_urls = []

    def request(self, method, url, *args, **kwargs):
        if not url.startswith(TWILIO_API):
            raise AssertionError(f"the library requested an unexpected host: {url}")
        url = self.base_url + url[len(TWILIO_API):]
        self.requested_urls.append(url)
        return super().request(method, url, *args, **kwargs)


class MultiParams:
    """The smallest MultiDict the RequestValidator accepts (it calls `getall`)."""

    def __init__(self, pairs):
        self.pairs = [(name, value) for name, value in pairs]

    def __iter__(self):
        return iter([name for name, _ in self.pairs])

    def getall(self, name):
        return [value for key, value in self.pairs if key == name]


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_rest_error(action, status, code):
    try:
        action()
    except TwilioRestException as error:
        expect(error.status == status, f"expected HTTP {status}, got {error.status}")
        expect(error.code == code, f"expected Twilio code {code}, got {error.code}")
        return error
    raise AssertionError(f"expected TwilioRestException {status}/{code}, got success")


def main():
    env = os.environ
    base_url = env["TWILIO_EMULATOR_BASE_URL"]
    account_sid = env["TWILIO_ACCOUNT_SID"]
    auth_token = env["TWILIO_AUTH_TOKEN"]
    number = env["TWILIO_NUMBER"]
    number_sid = env["TWILIO_NUMBER_SID"]
    extra_numbers = int(env["TWILIO_EXTRA_NUMBERS"])

    http_client = EmulatorHttpClient(base_url)
    client = Client(account_sid, auth_token, http_client=http_client)

    # IncomingPhoneNumbers: list with the PhoneNumber filter, list all through paging, update,
    # fetch.
    found = client.incoming_phone_numbers.list(phone_number=number)
    expect(len(found) == 1, f"expected one number for {number}, got {len(found)}")
    expect(found[0].sid == number_sid, f"wrong sid {found[0].sid}")
    expect(found[0].phone_number == number, f"wrong number {found[0].phone_number}")
    expect(found[0].account_sid == account_sid, "wrong account_sid")

    urls_before = len(http_client.requested_urls)
    everything = client.incoming_phone_numbers.list(page_size=1)
    pages_fetched = len(http_client.requested_urls) - urls_before
    expect(len(everything) == extra_numbers + 1, f"paging returned {len(everything)} numbers")
    expect(pages_fetched == extra_numbers + 1, f"paging fetched {pages_fetched} pages")

    updated = client.incoming_phone_numbers(number_sid).update(
        voice_url="https://engine.example/twilio/voice",
        voice_method="POST",
        sms_url="https://engine.example/twilio/sms",
        status_callback="https://engine.example/twilio/status",
        status_callback_method="POST",
    )
    expect(updated.voice_url == "https://engine.example/twilio/voice", "update: voice_url")
    expect(updated.sms_url == "https://engine.example/twilio/sms", "update: sms_url")

    fetched = client.incoming_phone_numbers(number_sid).fetch()
    expect(fetched.voice_url == "https://engine.example/twilio/voice", "fetch: voice_url")
    expect(fetched.status_callback == "https://engine.example/twilio/status", "fetch: callback")
    expect(isinstance(fetched.date_created, datetime.datetime), "date_created is not RFC 2822")
    expect(isinstance(fetched.date_updated, datetime.datetime), "date_updated is not RFC 2822")

    # Calls: create, hang up, fetch.
    call = client.calls.create(
        to="+15557654321",
        from_=number,
        url="https://engine.example/twilio/outbound",
        status_callback="https://engine.example/twilio/status",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        status_callback_method="POST",
        machine_detection="Enable",
        async_amd="true",
        timeout=30,
    )
    expect(call.sid.startswith("CA") and len(call.sid) == 34, f"bad call sid {call.sid}")
    expect(call.status == "queued", f"new call status {call.status}")
    expect(call.direction == "outbound-api", f"call direction {call.direction}")
    expect(isinstance(call.date_created, datetime.datetime), "call date_created")

    ended = client.calls(call.sid).update(status="completed")
    expect(ended.status == "completed", f"hung-up call status {ended.status}")
    expect(client.calls(call.sid).fetch().status == "completed", "fetched call status")

    # A call to a busy callee: Twilio's progress ends in `busy`, seen through fetch.
    busy = client.calls.create(
        to=env["TWILIO_BUSY_CALLEE"],
        from_=number,
        url="https://engine.example/twilio/voice?call_id=call_1",
        status_callback=env["CALL_STATUS_CALLBACK"],
        status_callback_event=["initiated", "ringing", "answered", "completed"],
    )
    expect(busy.status == "queued", f"new call status {busy.status}")
    deadline = time.monotonic() + 10
    fetched_busy = client.calls(busy.sid).fetch()
    while fetched_busy.status != "busy":
        expect(time.monotonic() < deadline, f"the busy call is {fetched_busy.status}")
        time.sleep(0.05)
        fetched_busy = client.calls(busy.sid).fetch()
    expect(fetched_busy.direction == "outbound-api", "busy call direction")

    # Messages: create and fetch.
    message = client.messages.create(
        to="+15557654321",
        from_=number,
        body="Hello from the official library",
        status_callback="https://engine.example/twilio/sms-status",
    )
    expect(message.sid.startswith("SM") and len(message.sid) == 34, f"bad sid {message.sid}")
    expect(message.status == "queued", f"new message status {message.status}")
    expect(client.messages(message.sid).fetch().body == "Hello from the official library", "body")

    # Recordings: start a dual-channel recording on the live call, fetch and list it, start and
    # delete a second one; starting one on an ended call is refused.
    live_sid = env["TWILIO_LIVE_CALL_SID"]
    recording = client.calls(live_sid).recordings.create(
        recording_channels="dual",
        recording_status_callback=env["RECORDING_STATUS_CALLBACK"],
        recording_status_callback_event=["completed", "absent"],
        recording_status_callback_method="POST",
        recording_track="both",
        trim="do-not-trim",
    )
    expect(recording.sid.startswith("RE") and len(recording.sid) == 34, f"bad sid {recording.sid}")
    expect(recording.status == "in-progress", f"new recording status {recording.status}")
    expect(recording.channels == 2, f"dual recording channels {recording.channels!r}")
    expect(recording.source == "StartCallRecordingAPI", f"recording source {recording.source}")
    expect(recording.call_sid == live_sid, "recording call_sid")
    expect(recording.track == "both", f"recording track {recording.track}")
    expect(isinstance(recording.start_time, datetime.datetime), "recording start_time")
    fetched_recording = client.recordings(recording.sid).fetch()
    expect(fetched_recording.call_sid == live_sid, "fetched recording call_sid")
    expect(fetched_recording.status == "in-progress", "fetched recording status")
    listed = [r.sid for r in client.recordings.list(call_sid=live_sid)]
    expect(listed == [recording.sid], f"recordings of the call: {listed}")
    expect(
        [r.sid for r in client.calls(live_sid).recordings.list()] == [recording.sid],
        "the call's recordings subresource",
    )
    second = client.calls(live_sid).recordings.create()
    expect(second.channels == 1, f"default channels {second.channels!r}")
    expect(client.recordings(second.sid).delete() is True, "delete returned False")
    expect_rest_error(lambda: client.recordings(second.sid).fetch(), 404, 20404)
    expect_rest_error(lambda: client.calls(call.sid).recordings.create(), 400, 21220)
    expect_rest_error(lambda: client.recordings("RE" + "0" * 32).fetch(), 404, 20404)

    # Errors as TwilioRestException with Twilio's codes.
    bad_client = Client(account_sid, "0" * 32, http_client=EmulatorHttpClient(base_url))
    expect_rest_error(lambda: bad_client.incoming_phone_numbers(number_sid).fetch(), 401, 20003)
    # A list page that fails is a plain TwilioException carrying the response (base/page.py).
    try:
        bad_client.incoming_phone_numbers.list()
        raise AssertionError("listing with a wrong token succeeded")
    except TwilioRestException:
        raise
    except TwilioException as error:
        response = error.args[1]
        expect(response.status_code == 401, f"list with a wrong token: HTTP {response.status_code}")
        expect(json.loads(response.text)["code"] == 20003, f"list error body {response.text}")
    expect_rest_error(lambda: client.calls("CA" + "0" * 32).fetch(), 404, 20404)
    expect_rest_error(lambda: client.messages.create(to="+15557654321", from_=number), 400, 21602)

    # Signatures: ours must validate with the library, and the library's with ours (Rust side).
    validator = RequestValidator(auth_token)
    signed_url = env["NIXFLEX_SIGNED_URL"]
    signed_params = MultiParams(json.loads(env["NIXFLEX_SIGNED_PARAMS"]))
    expect(
        validator.validate(signed_url, signed_params, env["NIXFLEX_SIGNATURE"]),
        "RequestValidator rejected nixflex_providers' form signature",
    )
    expect(
        not validator.validate(signed_url + "&tampered=1", signed_params, env["NIXFLEX_SIGNATURE"]),
        "RequestValidator accepted a tampered URL",
    )
    expect(
        validator.validate(
            env["NIXFLEX_JSON_URL"], env["NIXFLEX_JSON_BODY"], env["NIXFLEX_JSON_SIGNATURE"]
        ),
        "RequestValidator rejected nixflex_providers' JSON body signature",
    )

    python_url = "https://engine.example:443/twilio/voice?agent=a1&x=%27q%27"
    python_params = [
        ("CallSid", "CA" + "1" * 32),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("From", "+15550001111"),
        ("Body", "Tom & Jerry \u00e9\u00e8 \u2603"),
    ]
    json_body = '{"event": "done", "ok": true}'
    json_url = "https://engine.example/twilio/json?bodySHA256=" + validator.compute_hash(json_body)

    # TwiML rendered by the helper library, compared byte for byte with nixflex's builder.
    connect_response = VoiceResponse()
    connect = Connect(action="https://engine.example/twilio/stream-ended?call=c_1&x=2")
    stream = connect.stream(
        url="wss://media.example/twilio/ws",
        status_callback="https://engine.example/twilio/stream-status",
        status_callback_method="POST",
    )
    stream.parameter(name="call_id", value="c_123")
    stream.parameter(name="token", value='se"cr<e>t&')
    connect_response.append(connect)

    reject_response = VoiceResponse()
    reject_response.reject(reason="busy")
    hangup_response = VoiceResponse()
    hangup_response.hangup()
    say_response = VoiceResponse()
    say_response.say("Tom & Jerry <3", voice="Polly.Joanna", language="en-US")
    dial_response = VoiceResponse()
    dial = Dial(caller_id="+15550001111", timeout=20, action="https://engine.example/dial-done")
    dial.number("+15550002222")
    dial_response.append(dial)
    message_response = MessagingResponse()
    message_response.message("Thanks & see you <soon>")

    print(
        json.dumps(
            {
                "python_signature": {
                    "url": python_url,
                    "params": python_params,
                    "signature": validator.compute_signature(python_url, MultiParams(python_params)),
                },
                "python_json_signature": {
                    "url": json_url,
                    "body": json_body,
                    "signature": validator.compute_signature(json_url, {}),
                },
                "twiml": {
                    "connect_stream": connect_response.to_xml(),
                    "reject_busy": reject_response.to_xml(),
                    "hangup": hangup_response.to_xml(),
                    "say": say_response.to_xml(),
                    "dial": dial_response.to_xml(),
                    "message": message_response.to_xml(),
                    "empty": VoiceResponse().to_xml(),
                },
                "call_sid": call.sid,
                "busy_call_sid": busy.sid,
                "message_sid": message.sid,
                "recording_sid": recording.sid,
            }
        )
    )


if __name__ == "__main__":
    main()
