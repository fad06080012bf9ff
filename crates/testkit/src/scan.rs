//! Where a text is stored: every column of every table, read as text. For
//! tests that a secret reaches no row.

use sqlx::PgPool;

/// `(table, column, rows)` for each column of each table of the `public`
/// schema in which `needle` occurs (in the column's value cast to text),
/// with the number of rows holding it. Also returns how many columns were
/// searched, so that a test can tell it searched something.
pub async fn columns_holding(pool: &PgPool, needle: &str) -> (Vec<(String, String, i64)>, usize) {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text
         FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("list the columns");
    let mut found = Vec::new();
    for (table, column) in &columns {
        let sql =
            format!("SELECT count(*) FROM \"{table}\" WHERE strpos(\"{column}\"::text, $1) > 0");
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(needle)
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("search {table}.{column}: {e}"));
        if n > 0 {
            found.push((table.clone(), column.clone(), n));
        }
    }
    (found, columns.len())
}
