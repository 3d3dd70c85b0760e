with sales as (
    select
        product_id,
        sum(quantity) as units_sold,
        sum(line_amount) as revenue
    from {{ ref('stg_order_lines') }}
    group by product_id
)
select
    p.product_id,
    p.sku,
    p.product_name,
    p.category,
    p.price,
    p.cost,
    p.price - p.cost as unit_margin,
    p.is_active,
    p.discontinued_on,
    coalesce(s.units_sold, 0) as units_sold,
    coalesce(s.revenue, 0) as revenue
from {{ ref('stg_products') }} p
left join sales s on s.product_id = p.product_id
