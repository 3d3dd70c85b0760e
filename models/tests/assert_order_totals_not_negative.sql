-- Orders whose total is negative: the source's CHECK constraints forbid them.
select order_id, total
from {{ ref('fct_orders') }}
where total < 0
