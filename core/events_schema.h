/* SPDX-License-Identifier: MIT
 * events_schema.h — the event store's migration steps (templates).
 */
#ifndef PGS_EVENTS_SCHEMA_H
#define PGS_EVENTS_SCHEMA_H
extern const char pgs_events_schema_v1[];
extern const char pgs_events_schema_v2[];
#endif
