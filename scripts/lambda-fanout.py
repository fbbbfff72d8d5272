#!/usr/bin/env python3
"""The Lambda-style fan-out that distributary replaces, for `scripts/bench cpu`:
a boto3 handler as people write it (awslabs/aws-lambda-fanout, fixed to retry
the entries PutRecords refuses), fed the way Lambda's event source mapping
feeds it, on 127.0.0.1 only.

    lambda-fanout.py ENDPOINT SOURCE_STREAM COUNT OUTPUT...

The event source mapping is emulated: each shard is read with GetRecords in
batches of 100 (the mapping's default batch size) and every batch becomes a
Lambda event, JSON as the Lambda runtime receives it. Only what Lambda bills
is measured: the runtime decoding the event and the handler (process CPU
time around those two); reading the source is the mapping's work and is not
counted. The handler decodes each record, writes the batch to every output
with PutRecords (500 entries or 5 MiB per request) and retries only the
entries that failed, until each output took every record.

Prints one line: `deliveries cpu_seconds us_per_delivery requests`.
"""

import base64
import json
import sys
import time

import boto3
from botocore.config import Config

BATCH = 100  # the event source mapping's default batch size
MAX_ENTRIES = 500
MAX_BYTES = 5 * 1024 * 1024


def client(endpoint):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 10, "mode": "standard"}),
    )


class Handler:
    """The function: one instance per Lambda execution environment."""

    def __init__(self, kinesis, outputs):
        self.kinesis = kinesis
        self.outputs = outputs
        self.requests = 0

    def __call__(self, event, _context=None):
        entries = [
            {
                "Data": base64.b64decode(r["kinesis"]["data"]),
                "PartitionKey": r["kinesis"]["partitionKey"],
            }
            for r in event["Records"]
        ]
        for output in self.outputs:
            self.put_all(output, entries)

    def put_all(self, stream, entries):
        for chunk in chunks(entries):
            pending = chunk
            for attempt in range(20):
                self.requests += 1
                answer = self.kinesis.put_records(StreamName=stream, Records=pending)
                if answer.get("FailedRecordCount", 0) == 0:
                    break
                pending = [
                    e
                    for e, r in zip(pending, answer["Records"])
                    if "ErrorCode" in r
                ]
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise RuntimeError(f"{stream}: {len(pending)} records not written")


def chunks(entries):
    chunk, size = [], 0
    for e in entries:
        n = len(e["Data"]) + len(e["PartitionKey"])
        if chunk and (len(chunk) == MAX_ENTRIES or size + n > MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(e)
        size += n
    if chunk:
        yield chunk


def events(kinesis, stream, count):
    """The event source mapping: batches of every shard, as Lambda events."""
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    iterators = {
        s["ShardId"]: kinesis.get_shard_iterator(
            StreamName=stream, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for s in shards
    }
    seen, idle = 0, 0
    while seen < count and idle < 50:
        progressed = False
        for shard, iterator in list(iterators.items()):
            answer = kinesis.get_records(ShardIterator=iterator, Limit=BATCH)
            iterators[shard] = answer["NextShardIterator"]
            records = answer["Records"]
            if not records:
                continue
            progressed = True
            seen += len(records)
            yield json.dumps(
                {
                    "Records": [
                        {
                            "kinesis": {
                                "kinesisSchemaVersion": "1.0",
                                "partitionKey": r["PartitionKey"],
                                "sequenceNumber": r["SequenceNumber"],
                                "data": base64.b64encode(r["Data"]).decode(),
                                "approximateArrivalTimestamp": r[
                                    "ApproximateArrivalTimestamp"
                                ].timestamp(),
                            },
                            "eventSource": "aws:kinesis",
                            "eventVersion": "1.0",
                            "eventID": f"{shard}:{r['SequenceNumber']}",
                            "eventName": "aws:kinesis:record",
                            "awsRegion": "us-east-1",
                            "eventSourceARN": f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}",
                        }
                        for r in records
                    ]
                }
            )
        idle = 0 if progressed else idle + 1
        if not progressed:
            time.sleep(0.1)
    if seen < count:
        raise RuntimeError(f"{stream}: read {seen} of {count} records")


def main():
    endpoint, stream, count, outputs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    kinesis = client(endpoint)
    handler = Handler(kinesis, outputs)
    billed = 0.0
    for event in events(kinesis, stream, count):
        start = time.process_time()
        handler(json.loads(event))
        billed += time.process_time() - start
    deliveries = count * len(outputs)
    print(f"{deliveries} {billed:.3f} {billed * 1e6 / deliveries:.2f} {handler.requests}")


if __name__ == "__main__":
    main()
