import pytest

from voicemail.auth.ratelimit import AccountRateLimiter
from voicemail.errors import RateLimited


def test_limit_per_account_and_bucket() -> None:
    limiter = AccountRateLimiter()
    for _ in range(3):
        limiter.hit("o-a", per_minute=3, bucket="public-api")
    with pytest.raises(RateLimited) as caught:
        limiter.hit("o-a", per_minute=3, bucket="public-api")
    assert 1 <= caught.value.retry_after_seconds <= 60
    assert caught.value.headers == {"Retry-After": str(caught.value.retry_after_seconds)}
    # other accounts and other buckets are counted apart
    limiter.hit("o-b", per_minute=3, bucket="public-api")
    limiter.hit("o-a", per_minute=3, bucket="deposit")
