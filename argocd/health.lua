-- ArgoCD health check for hypersend.io/HypersendCluster.
-- ArgoCD runs this in gopher-lua with only the base, table and package libraries (no `string`),
-- with the live object as `obj`. Order matters: deletion, pause, stale status, failure, readiness.
-- It reads the kstatus conditions the operator writes (docs/architecture.md, "The status
-- contract"): Stalled (progress needs a human) is Degraded, Reconciling is Progressing.
local hs = {}

local function condition(status, conditionType)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function messageOf(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "deletion in progress"
  return hs
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local paused = condition(status, "ReconciliationPaused")
if status.phase == "Paused" or (paused ~= nil and paused.status == "True") then
  hs.status = "Suspended"
  hs.message = messageOf(paused, "Reconciliation is paused")
  return hs
end
local annotations = obj.metadata and obj.metadata.annotations or {}
if annotations["hypersend.io/paused"] == "true" then
  hs.status = "Progressing"
  hs.message = "Pause requested; waiting for the operator to acknowledge it"
  return hs
end

local generation = obj.metadata and obj.metadata.generation or nil
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to apply generation " .. generation ..
    " (observed " .. (observed or "none") .. ")"
  return hs
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = messageOf(stalled, messageOf(ready, "Progress needs a human"))
  return hs
end

local degraded = condition(status, "Degraded")
if (degraded ~= nil and degraded.status == "True") or status.phase == "Degraded" then
  hs.status = "Degraded"
  if degraded ~= nil and degraded.status == "True" then
    hs.message = messageOf(degraded, messageOf(ready, "Degraded"))
  else
    hs.message = messageOf(ready, "Degraded")
  end
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = messageOf(ready, "Ready")
  return hs
end

local reconciling = condition(status, "Reconciling")
local progressing = condition(status, "Progressing")
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = messageOf(reconciling, messageOf(ready, "Components are starting"))
elseif progressing ~= nil and progressing.status == "True" then
  hs.message = messageOf(progressing, messageOf(ready, "Components are starting"))
else
  hs.message = messageOf(ready, "Components are starting")
end
return hs
