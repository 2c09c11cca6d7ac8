"""The request log's handler writes lines in batches, yet never loses or holds one for long."""

import io
import logging
import time

from ds2api_site.jsonlog import BatchingStreamHandler, JsonFormatter


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_lines_are_written_together_shortly_after_they_are_logged():
    stream = io.StringIO()
    logger = _logger(BatchingStreamHandler(stream, interval=0.1), "test.batching.periodic")
    for i in range(3):
        logger.info("request", extra={"fields": {"n": i}})
    assert _eventually(lambda: stream.getvalue().count("\n") == 3)
    assert [line.split('"n":')[1][0] for line in stream.getvalue().splitlines()] == ["0", "1", "2"]


def test_a_full_batch_a_warning_and_flush_write_at_once():
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval=60, capacity=4)
    logger = _logger(handler, "test.batching.immediate")
    for i in range(3):
        logger.info("request %s", i)
    assert stream.getvalue() == ""  # waiting for the batch
    logger.info("request 3")
    assert stream.getvalue().count("\n") == 4  # the batch was full
    logger.info("request 4")
    logger.warning("something is wrong")
    assert stream.getvalue().count("\n") == 6  # a warning writes what waits, itself included
    logger.info("request 5")
    handler.flush()  # as logging.shutdown() does at exit
    assert stream.getvalue().splitlines()[-1].endswith('"message":"request 5"}')
