-- SLA policies by category cover the subcategories (issue 20 point 9).
--
-- A policy given a category applied only to cases of exactly that category: a policy for
-- "Газопостачання" left "Запах газу" under it without a deadline. Now a policy's category
-- matches the case's category or any category above it. The most specific still wins:
-- the most fields given; on a tie one with a category, then the nearest category (the
-- case's own before its parent's), then one with a type; then the lowest id.

CREATE OR REPLACE FUNCTION case_sla_plan(p_type text, p_priority text, p_category bigint,
                                         p_created timestamptz, p_paused double precision,
                                         OUT policy_id bigint, OUT fr_due timestamptz,
                                         OUT fr_warn timestamptz, OUT res_due timestamptz,
                                         OUT res_warn timestamptz)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    p    case_sla_policies;
    base double precision;
BEGIN
    WITH RECURSIVE up(id, depth) AS (
        SELECT p_category, 0 WHERE p_category IS NOT NULL
        UNION ALL
        SELECT c.parent_id, up.depth + 1 FROM case_categories c JOIN up ON c.id = up.id
        WHERE c.parent_id IS NOT NULL AND up.depth < 50)
    SELECT sp.* INTO p FROM case_sla_policies sp LEFT JOIN up ON up.id = sp.category_id
    WHERE sp.is_active
      AND (sp.case_type IS NULL OR sp.case_type = p_type)
      AND (sp.priority IS NULL OR sp.priority = p_priority)
      AND (sp.category_id IS NULL OR up.id IS NOT NULL)
    ORDER BY (sp.category_id IS NOT NULL)::int + (sp.case_type IS NOT NULL)::int
             + (sp.priority IS NOT NULL)::int DESC,
             sp.category_id IS NOT NULL DESC, up.depth NULLS LAST,
             sp.case_type IS NOT NULL DESC, sp.id
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    policy_id := p.id;
    base := business_cum(p.calendar_id, p_created) + p_paused;
    IF p.first_response_minutes IS NOT NULL THEN
        fr_due := business_instant(p.calendar_id, base + p.first_response_minutes * 60.0);
        fr_warn := business_instant(p.calendar_id,
                                    base + p.first_response_minutes * 0.6 * p.warning_percent);
    END IF;
    IF p.resolution_minutes IS NOT NULL THEN
        res_due := business_instant(p.calendar_id, base + p.resolution_minutes * 60.0);
        res_warn := business_instant(p.calendar_id,
                                     base + p.resolution_minutes * 0.6 * p.warning_percent);
    END IF;
END $$;
