SELECT $__timeGroupAlias(ts, $__interval), $__timeGroup("ts", '1h'), count(*) AS n,
  $__from, $__to, $__interval_ms, $__interval, $__timeFrom(), $__timeTo()
FROM http /* $notavar */ WHERE $__timeFilter(ts) AND host IN (${hosts:csv}) AND vhost = '$host'
  AND x = $$dollar quoted$$ AND y = $1 AND "col$name" = 'it''s' -- $nope
GROUP BY 1 ORDER BY 1
