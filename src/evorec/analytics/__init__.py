"""Interest analytics: one user's interest timeline and shift points, and the population's
drift, read against the catalogue's categories."""

from evorec.analytics.categories import ItemCategories
from evorec.analytics.population import Population, population_summary
from evorec.analytics.timeline import ShiftSettings, Timeline, interest_timeline

__all__ = [
    "ItemCategories",
    "Population",
    "ShiftSettings",
    "Timeline",
    "interest_timeline",
    "population_summary",
]
