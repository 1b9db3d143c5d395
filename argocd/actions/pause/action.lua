-- Stop the operator from changing anything for this HypersendCluster.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["hypersend.io/paused"] = "true"
return obj
