"""The usage queries people run, as the README documents them and ``modelport usage``
runs them. Pure: SQL text only. Each reads one period (``request_time >= since AND
< until``), so that an index of :mod:`.schema` bounds the rows it touches whatever
the table's size.
"""

from __future__ import annotations

DSN_ENV = "MODELPORT_USAGE_DSN"
"""Where `modelport usage` reads the usage database's connection string when no
--dsn-file is given."""

PRINCIPALS_OF_ENDPOINT = """
SELECT coalesce(requester, '(anonymous)') AS requester,
       coalesce(requester_type, '') AS requester_type,
       count(*) AS requests,
       count(*) FILTER (WHERE status_code >= 400) AS errors,
       sum(input_token_count) AS input_tokens,
       sum(output_token_count) AS output_tokens,
       count(*) FILTER (WHERE token_counts_estimated) AS estimated,
       avg(time_to_first_token_ms) FILTER (WHERE status_code < 400) AS mean_ttft_ms
FROM modelport_usage
WHERE endpoint_namespace = $1 AND endpoint_name = $2
  AND request_time >= $3 AND request_time < $4
GROUP BY 1, 2
ORDER BY sum(input_token_count) + sum(output_token_count) DESC, 1
"""
"""Per principal, one endpoint, one period: what ``modelport usage`` prints."""

BY_PRINCIPAL_AND_DAY = """
SELECT date_trunc('day', request_time) AS day, requester, requester_type,
       count(*) AS requests,
       sum(input_token_count) AS input_tokens, sum(output_token_count) AS output_tokens
FROM modelport_usage
WHERE endpoint_namespace = $1 AND endpoint_name = $2
  AND request_time >= $3 AND request_time < $4
GROUP BY 1, 2, 3
ORDER BY 1, sum(input_token_count) + sum(output_token_count) DESC
"""
"""Usage by principal per day, of one endpoint (chargeback)."""

ONE_PRINCIPAL = """
SELECT date_trunc('day', request_time) AS day, endpoint_namespace, endpoint_name,
       count(*) AS requests,
       sum(input_token_count) AS input_tokens, sum(output_token_count) AS output_tokens
FROM modelport_usage
WHERE requester = $1 AND request_time >= $2 AND request_time < $3
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""
"""One principal's usage per day, across endpoints."""

TOP_ENDPOINTS = """
SELECT endpoint_namespace, endpoint_name,
       count(*) AS requests,
       sum(input_token_count + output_token_count) AS tokens
FROM modelport_usage
WHERE request_time >= $1 AND request_time < $2
GROUP BY 1, 2
ORDER BY tokens DESC
LIMIT $3
"""
"""The endpoints with the most tokens in a period."""

ERROR_RATES = """
SELECT date_trunc('day', request_time) AS day,
       count(*) AS requests,
       count(*) FILTER (WHERE status_code >= 400) AS errors,
       round(100.0 * count(*) FILTER (WHERE status_code >= 400) / count(*), 2) AS error_pct,
       count(*) FILTER (WHERE status_code = 429) AS rate_limited,
       count(*) FILTER (WHERE status_code >= 500) AS server_errors
FROM modelport_usage
WHERE endpoint_namespace = $1 AND endpoint_name = $2
  AND request_time >= $3 AND request_time < $4
GROUP BY 1
ORDER BY 1
"""
"""An endpoint's error rate per day."""
