"""A codmir webhook receiver with FastAPI. Runs as written:

    pip install -r requirements.txt
    CODMIR_SECRET='your-webhook-secret' CODMIR_SIGNING_SECRET='whsec_...' \
        uvicorn fastapi_app:app --host 127.0.0.1 --port 3000
"""

from fastapi import FastAPI, Request, Response

from codmir_receiver import enqueue, first_time, parse, verified

app = FastAPI()


@app.post("/webhooks/codmir")
async def codmir(request: Request) -> Response:
    body = await request.body()  # the raw bytes: a pydantic model would re-parse them
    if not verified(body, request.headers):
        return Response("invalid signature", status_code=400)
    event = parse(body)
    if event is None:
        return Response("not an event", status_code=400)
    if not first_time(event["id"]):
        print(f"duplicate {event['id']}", flush=True)
        return Response(status_code=200)  # done already: say so, or codmir retries
    enqueue(event)
    return Response(status_code=204)
