select
    order_id,
    line_no,
    product_id,
    quantity,
    unit_price,
    discount,
    quantity * unit_price * (1 - discount) as line_amount
from {{ source('shop', 'order_lines') }}
