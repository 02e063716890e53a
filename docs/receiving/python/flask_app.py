"""A codmir webhook receiver with Flask. Runs as written:

    pip install -r requirements.txt
    CODMIR_SECRET='your-webhook-secret' CODMIR_SIGNING_SECRET='whsec_...' PORT=3000 python flask_app.py
"""

import os

from flask import Flask, request

from codmir_receiver import enqueue, first_time, parse, verified

app = Flask(__name__)


@app.post("/webhooks/codmir")
def codmir():
    body = request.get_data()  # the raw bytes: request.json would re-parse them
    if not verified(body, request.headers):
        return "invalid signature", 400
    event = parse(body)
    if event is None:
        return "not an event", 400
    if not first_time(event["id"]):
        print(f"duplicate {event['id']}", flush=True)
        return "", 200  # done already: say so, or codmir retries
    enqueue(event)
    return "", 204


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "3000"))
    print(f"listening on http://127.0.0.1:{port}/webhooks/codmir", flush=True)
    app.run(host="127.0.0.1", port=port)
