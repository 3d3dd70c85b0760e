select
    id as product_id,
    sku,
    name as product_name,
    category,
    price,
    cost,
    weight_grams,
    active as is_active,
    created_at,
    discontinued_on
from {{ source('shop', 'products') }}
