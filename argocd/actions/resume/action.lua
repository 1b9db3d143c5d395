-- Let the operator reconcile this HypersendCluster again. The annotation is set to "false" rather
-- than removed: ArgoCD turns an emptied annotations table back into the old map when it cleans the
-- returned object, which would silently keep the cluster paused.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["hypersend.io/paused"] = "false"
return obj
