"""The only code that talks to aiohttp as a client, boto3 or kubernetes.

Each adapter translates its library's errors into ``pointercache.errors`` where it meets the
library, by status or error code. Heavy imports are lazy, so importing an adapter is cheap.
"""
