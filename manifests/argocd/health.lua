-- Argo CD health check for serving.modelport.io/ServingEndpoint.
--
-- Healthy     the operator has observed the current generation, every entity
--             with traffic is ready (state.ready READY) and no update is in
--             progress (state.configUpdate NOT_UPDATING).
-- Progressing the current generation is not observed yet, or an update rolls out.
-- Degraded    the update failed (UPDATE_FAILED), or the endpoint is not ready
--             while nothing is being updated to fix it.
local hs = {}

local function condition_message(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  return nil
end

if obj.status == nil or obj.status.observedGeneration == nil
    or obj.metadata.generation == nil
    or obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " ..
    tostring(obj.metadata.generation)
  return hs
end

local state = obj.status.state or {}
if state.configUpdate == "UPDATE_FAILED" then
  hs.status = "Degraded"
  hs.message = condition_message("Degraded") or "The last update failed"
  return hs
end
if state.configUpdate == "IN_PROGRESS" then
  hs.status = "Progressing"
  hs.message = condition_message("Progressing") or "Update in progress"
  return hs
end
if state.ready == "READY" then
  hs.status = "Healthy"
  hs.message = "Ready"
  return hs
end
if state.ready == "NOT_READY" and state.configUpdate == "NOT_UPDATING" then
  hs.status = "Degraded"
  hs.message = condition_message("Ready") or "Not ready"
  return hs
end
hs.status = "Progressing"
hs.message = condition_message("Ready") or "Waiting for the endpoint to become ready"
return hs
