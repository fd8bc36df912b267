"""The walkthrough's corpus: short research abstracts (Chinese and English) with reference keywords.

Written for annotune, not taken from anywhere: each abstract is composed from a study design
typical of its field (a diagnostic-accuracy study, a randomized trial, a field experiment, a
source-apportionment survey, ...) and field vocabularies, with numbers drawn at random. The
reference keywords are the study's central concepts as the abstract states them (the condition,
the method or intervention, the measure, the material, the region...), so every keyword appears
verbatim in its abstract, as in author-supplied keyword lists of real papers.

``python examples/keywords/corpus.py`` rewrites ``corpus.jsonl`` (seeded: the same bytes every
time). Each line: ``{"id", "lang", "field", "abstract", "keywords": [...]}``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.jsonl"

# Each field has study designs ``(text, keyword slots)``, vocabularies shared by the whole field
# (``common``) and ``groups``: terms that make sense together (a condition with the tests that
# diagnose it, a crop with its practices and regions). One group is drawn per abstract, then one
# term per slot. In a text, {slot} is a term, {Slot} the same term capitalised, {slot2} a second,
# different term of that slot; {n}, {pct}, ... are numbers (see ``_numbers``). A keyword slot
# that is not a vocabulary names itself (a design such as "randomized controlled trial").

# -- English -----------------------------------------------------------------------------------

EN: dict[str, dict] = {
    "diagnostic imaging": {
        "common": {"measure": ["diagnostic accuracy", "sensitivity", "specificity",
                               "positive predictive value", "negative predictive value"]},
        "groups": [
            {"condition": ["thyroid nodules"],
             "method": ["shear wave elastography", "contrast-enhanced ultrasound",
                        "fine-needle aspiration cytology", "deep learning"],
             "baseline": ["conventional ultrasound"], "reference": ["histopathology"],
             "population": ["adults", "outpatients", "elderly patients"]},
            {"condition": ["breast cancer"],
             "method": ["contrast-enhanced mammography", "automated breast ultrasound",
                        "diffusion-weighted imaging", "shear wave elastography"],
             "baseline": ["digital mammography"], "reference": ["histopathology"],
             "population": ["women with dense breasts", "high-risk women"]},
            {"condition": ["liver fibrosis"],
             "method": ["transient elastography", "magnetic resonance elastography",
                        "shear wave elastography"],
             "baseline": ["serum fibrosis scores"], "reference": ["liver biopsy"],
             "population": ["patients with chronic hepatitis B", "patients with obesity"]},
            {"condition": ["acute appendicitis"],
             "method": ["point-of-care ultrasound", "low-dose computed tomography"],
             "baseline": ["clinical examination", "the Alvarado score"],
             "reference": ["surgical findings"],
             "population": ["children", "pregnant women", "emergency department patients"]},
            {"condition": ["pulmonary embolism"],
             "method": ["CT pulmonary angiography", "dual-energy CT", "point-of-care ultrasound"],
             "baseline": ["D-dimer testing"], "reference": ["follow-up imaging"],
             "population": ["emergency department patients", "hospitalized patients"]},
            {"condition": ["prostate cancer"],
             "method": ["multiparametric MRI", "PSMA PET/CT", "micro-ultrasound"],
             "baseline": ["PSA screening"], "reference": ["biopsy histopathology"],
             "population": ["men with elevated PSA", "older men"]},
            {"condition": ["osteoporosis"],
             "method": ["opportunistic CT screening", "quantitative ultrasound", "deep learning"],
             "baseline": ["clinical risk assessment"],
             "reference": ["dual-energy X-ray absorptiometry"],
             "population": ["postmenopausal women", "elderly patients"]},
            {"condition": ["lung nodules"],
             "method": ["low-dose computed tomography", "deep learning", "PET/CT"],
             "baseline": ["radiologist assessment", "chest radiography"],
             "reference": ["histopathology"],
             "population": ["smokers", "screening participants"]},
            {"condition": ["deep vein thrombosis"],
             "method": ["compression ultrasound", "point-of-care ultrasound"],
             "baseline": ["D-dimer testing"], "reference": ["venography"],
             "population": ["hospitalized patients", "orthopaedic surgery patients"]},
        ],
        "designs": [
            (("Objective: To evaluate {method} in the diagnosis of {condition}. Methods: We "
             "retrospectively reviewed {n} {population} who underwent both {method} and {baseline} "
             "between {y1} and {y2}, with {reference} as the reference standard. Results: {Method} "
             "reached a {measure} of {hi}%, against {lo}% for {baseline} (P < 0.05). "
             "Conclusion: {Method} improves the {measure} for {condition}."),
             ["condition", "method", "measure"]),
            (("Background: {Condition} is often missed at first presentation. We prospectively "
             "enrolled {n} {population} with suspected {condition} and compared {method} with "
             "{baseline}. Against {reference}, the {measure} of {method} was {hi}% and that of "
             "{baseline} {lo}%. {Method} is a reliable first-line test for {condition} in "
             "{population}."),
             ["condition", "method", "population", "measure"]),
        ],
    },
    "clinical trials": {
        "common": {"control": ["usual care", "standard care"]},
        "groups": [
            {"condition": ["type 2 diabetes"],
             "intervention": ["SGLT2 inhibitors", "carbohydrate restriction",
                              "aerobic exercise training", "intermittent fasting"],
             "outcome": ["glycated haemoglobin", "fasting glucose", "body weight"]},
            {"condition": ["hypertension"],
             "intervention": ["telemonitoring", "salt reduction", "aerobic exercise training",
                              "mindfulness training"],
             "outcome": ["blood pressure", "medication adherence"]},
            {"condition": ["heart failure"],
             "intervention": ["SGLT2 inhibitors", "telemonitoring", "cardiac rehabilitation"],
             "outcome": ["hospital readmission", "quality of life", "six-minute walk distance"]},
            {"condition": ["major depressive disorder"],
             "intervention": ["cognitive behavioural therapy", "mindfulness training",
                              "aerobic exercise training"],
             "outcome": ["depressive symptoms", "quality of life"]},
            {"condition": ["chronic obstructive pulmonary disease"],
             "intervention": ["pulmonary rehabilitation", "telemonitoring",
                              "inspiratory muscle training"],
             "outcome": ["six-minute walk distance", "hospital readmission", "quality of life"]},
            {"condition": ["knee osteoarthritis"],
             "intervention": ["acupuncture", "home-based physiotherapy", "weight loss programmes"],
             "outcome": ["pain scores", "physical function"]},
            {"condition": ["migraine"],
             "intervention": ["acupuncture", "mindfulness training", "magnesium supplementation"],
             "outcome": ["monthly headache days", "pain scores"]},
            {"condition": ["insomnia"],
             "intervention": ["cognitive behavioural therapy", "mindfulness training",
                              "acupuncture"],
             "outcome": ["sleep quality", "daytime fatigue"]},
            {"condition": ["non-alcoholic fatty liver disease"],
             "intervention": ["intermittent fasting", "vitamin E supplementation",
                              "aerobic exercise training"],
             "outcome": ["liver fat content", "liver enzymes"]},
            {"condition": ["ischemic stroke"],
             "intervention": ["early mobilisation", "robot-assisted gait training",
                              "home-based physiotherapy"],
             "outcome": ["functional independence", "walking speed"]},
        ],
        "designs": [
            (("Background: {Intervention} has been proposed for {condition}, but trial evidence is "
             "limited. Methods: In this randomized controlled trial, {n} adults with {condition} "
             "received {intervention} or {control} for {weeks} weeks; the primary outcome was "
             "{outcome}. Results: Compared with {control}, {intervention} improved {outcome} "
             "(P = 0.0{p}), with similar adverse events. Conclusions: {Intervention} is a safe "
             "option for improving {outcome} in {condition}."),
             ["condition", "intervention", "outcome", "randomized controlled trial"]),
            (("We conducted a meta-analysis of {k} trials ({n} participants) assessing "
             "{intervention} for {condition}. Pooled results showed that {intervention} improved "
             "{outcome} relative to {control} (standardized mean difference 0.{b}), with moderate "
             "heterogeneity. {Intervention} appears effective for {condition}, although larger "
             "trials are needed."),
             ["condition", "intervention", "outcome", "meta-analysis"]),
        ],
    },
    "machine learning": {
        "common": {
            "method": ["graph neural networks", "contrastive learning", "knowledge distillation",
                       "low-rank adaptation", "federated learning", "curriculum learning",
                       "mixture of experts", "active learning", "quantization-aware training",
                       "self-supervised pretraining"],
            "setting": ["noisy labels", "edge devices", "limited annotations", "imbalanced data",
                        "domain shift"],
        },
        "groups": [
            {"task": ["named entity recognition"], "metric": ["F1 score"],
             "baseline": ["fine-tuned BERT", "a BiLSTM-CRF tagger"]},
            {"task": ["image segmentation"], "metric": ["mean intersection over union",
                                                        "Dice coefficient"],
             "baseline": ["U-Net", "DeepLabv3"]},
            {"task": ["machine translation"], "metric": ["BLEU", "COMET"],
             "baseline": ["a Transformer baseline"]},
            {"task": ["anomaly detection"], "metric": ["F1 score", "area under the ROC curve"],
             "baseline": ["isolation forest", "an LSTM autoencoder"]},
            {"task": ["text classification"], "metric": ["macro-F1", "accuracy"],
             "baseline": ["fine-tuned BERT", "fastText"]},
            {"task": ["speech recognition"], "metric": ["word error rate"],
             "baseline": ["wav2vec 2.0", "a Conformer baseline"]},
            {"task": ["object detection"], "metric": ["mean average precision"],
             "baseline": ["YOLOv5", "Faster R-CNN"]},
            {"task": ["question answering"], "metric": ["exact match", "F1 score"],
             "baseline": ["fine-tuned BERT"]},
            {"task": ["code generation"], "metric": ["pass@1"], "baseline": ["CodeLlama-7B"]},
            {"task": ["recommendation"], "metric": ["NDCG@10", "recall@20"],
             "baseline": ["matrix factorization", "LightGCN"]},
        ],
        "designs": [
            (("{Task} with {setting} remains difficult because models overfit. We propose a "
             "framework based on {method} that shares representations across related tasks. On "
             "{k} public benchmarks it improves {metric} over {baseline} by {d}% while cutting "
             "training cost by {pct}%. Ablations show that {method} accounts for most of the "
             "gain."),
             ["task", "method", "setting"]),
            (("This paper studies {method} and {method2} for {task} under {setting}. We compare "
             "both against {baseline} with equal compute budgets on {k} datasets. {Method} gives "
             "the best {metric}, while {method2} is {d} times faster at inference. We release "
             "code and models to support work on {task}."),
             ["task", "method", "method2", "setting"]),
        ],
    },
    "agronomy": {
        "common": {},
        "groups": [
            {"crop": ["winter wheat"],
             "practice": ["deficit irrigation", "straw mulching", "reduced nitrogen fertilization",
                          "conservation tillage"],
             "outcome": ["grain yield", "water use efficiency", "nitrogen use efficiency"],
             "region": ["the North China Plain", "the Loess Plateau"]},
            {"crop": ["rice"],
             "practice": ["alternate wetting and drying", "straw return",
                          "reduced nitrogen fertilization", "organic manure substitution"],
             "outcome": ["grain yield", "grain quality", "nitrogen use efficiency"],
             "region": ["the Yangtze River basin", "the Mekong Delta", "northern India"]},
            {"crop": ["maize"],
             "practice": ["drip irrigation", "intercropping", "straw mulching",
                          "conservation tillage"],
             "outcome": ["grain yield", "water use efficiency", "soil organic carbon"],
             "region": ["the North China Plain", "semi-arid regions", "southern Brazil"]},
            {"crop": ["soybean"],
             "practice": ["intercropping", "biochar amendment", "rhizobium inoculation"],
             "outcome": ["seed yield", "nodulation", "soil microbial diversity"],
             "region": ["southern Brazil", "northeast China"]},
            {"crop": ["greenhouse tomato"],
             "practice": ["drip irrigation", "organic manure substitution", "biochar amendment"],
             "outcome": ["fruit quality", "fruit yield", "water use efficiency"],
             "region": ["northern China", "southern Spain"]},
            {"crop": ["apple orchards"],
             "practice": ["cover cropping", "drip irrigation", "organic manure substitution"],
             "outcome": ["fruit quality", "soil organic carbon", "fruit yield"],
             "region": ["the Loess Plateau", "Washington State"]},
            {"crop": ["potato"],
             "practice": ["drip irrigation", "reduced nitrogen fertilization", "straw mulching"],
             "outcome": ["tuber yield", "water use efficiency", "nitrogen use efficiency"],
             "region": ["northern India", "Inner Mongolia"]},
            {"crop": ["cotton"],
             "practice": ["deficit irrigation", "drip irrigation under plastic mulch",
                          "reduced nitrogen fertilization"],
             "outcome": ["lint yield", "water use efficiency"],
             "region": ["Xinjiang", "the Indus basin"]},
        ],
        "designs": [
            (("Improving the {outcome} of {crop} is essential for food security in {region}. A "
             "{years}-year field experiment assessed {practice} against conventional management. "
             "{Practice} increased {outcome} by {pct}% and {outcome2} by {lo}%. The results "
             "suggest that {practice} is a promising strategy for sustainable {crop} production "
             "in {region}."),
             ["crop", "practice", "outcome", "region"]),
            (("We examined how {practice} and {practice2} affect {outcome} in {crop} systems of "
             "{region}. Across {k} sites and {years} seasons, {practice} raised {outcome} by "
             "{pct}%, whereas {practice2} mainly improved {outcome2}. Combining both practices "
             "gave the highest economic return for {crop} growers."),
             ["crop", "practice", "practice2", "outcome"]),
        ],
    },
    "environmental science": {
        "common": {"region": ["the Yangtze River Delta", "the Pearl River Delta", "northern Italy",
                              "the Ganges basin", "the Great Lakes region",
                              "the Beijing-Tianjin-Hebei region"]},
        "groups": [
            {"pollutant": ["PM2.5"], "medium": ["urban air", "indoor air"],
             "method": ["positive matrix factorization", "land use regression",
                        "satellite remote sensing", "health risk assessment"]},
            {"pollutant": ["microplastics"],
             "medium": ["coastal sediments", "urban rivers", "agricultural soils"],
             "method": ["micro-Raman spectroscopy", "infrared spectroscopy",
                        "ecological risk assessment"]},
            {"pollutant": ["heavy metals"],
             "medium": ["agricultural soils", "river sediments", "coastal sediments"],
             "method": ["positive matrix factorization", "health risk assessment",
                        "geostatistical analysis"]},
            {"pollutant": ["nitrate"], "medium": ["groundwater", "drinking water sources"],
             "method": ["stable isotope analysis", "Bayesian mixing models",
                        "health risk assessment"]},
            {"pollutant": ["ground-level ozone"], "medium": ["urban air"],
             "method": ["observation-based box models", "machine learning",
                        "satellite remote sensing"]},
            {"pollutant": ["antibiotic resistance genes"],
             "medium": ["wastewater treatment plants", "urban rivers", "agricultural soils"],
             "method": ["metagenomic sequencing", "quantitative PCR"]},
            {"pollutant": ["polycyclic aromatic hydrocarbons"],
             "medium": ["coastal sediments", "urban soils", "indoor dust"],
             "method": ["diagnostic ratios", "positive matrix factorization",
                        "health risk assessment"]},
            {"pollutant": ["perfluoroalkyl substances"],
             "medium": ["drinking water", "groundwater", "urban rivers"],
             "method": ["high-resolution mass spectrometry", "health risk assessment"]},
        ],
        "designs": [
            (("{Pollutant} in {medium} threatens ecosystems and human health. We collected {n} "
             "samples of {medium} across {region} in {y1} and mapped the distribution of "
             "{pollutant}. {Method} attributed {pct}% of the variation to industrial and "
             "agricultural activities. These findings support targeted control of {pollutant} "
             "in {region}."),
             ["pollutant", "medium", "method", "region"]),
            (("Long-term data on {pollutant} in {medium} are scarce. Combining {n} field "
             "measurements with {method}, we estimated the exposure of residents of {region} "
             "from {y1} to {y2}. Levels of {pollutant} fell by {pct}% after new discharge "
             "standards, but hotspots remained near industrial parks."),
             ["pollutant", "medium", "method"]),
        ],
    },
    "materials and energy": {
        "common": {},
        "groups": [
            {"material": ["perovskite solar cells"],
             "strategy": ["defect passivation", "interface engineering", "additive engineering"],
             "property": ["power conversion efficiency", "operational stability"]},
            {"material": ["lithium-sulfur batteries"],
             "strategy": ["heteroatom doping", "separator modification", "catalytic host design"],
             "property": ["cycling stability", "rate capability", "sulfur utilization"]},
            {"material": ["sodium-ion batteries"],
             "strategy": ["heteroatom doping", "carbon coating", "electrolyte engineering"],
             "property": ["rate capability", "cycling stability", "initial Coulombic efficiency"]},
            {"material": ["solid-state electrolytes"],
             "strategy": ["aliovalent doping", "interface engineering", "polymer blending"],
             "property": ["ionic conductivity", "electrochemical stability"]},
            {"material": ["supercapacitors"],
             "strategy": ["heteroatom doping", "electrospinning", "hydrothermal synthesis"],
             "property": ["specific capacitance", "cycling stability"]},
            {"material": ["high-entropy alloys"],
             "strategy": ["additive manufacturing", "heat treatment", "grain refinement"],
             "property": ["tensile strength", "ductility", "corrosion resistance"]},
            {"material": ["hydrogel electrolytes"],
             "strategy": ["double-network design", "salt engineering"],
             "property": ["ionic conductivity", "stretchability", "freezing tolerance"]},
            {"material": ["metal-organic frameworks"],
             "strategy": ["ligand functionalization", "defect engineering",
                          "hydrothermal synthesis"],
             "property": ["CO2 uptake", "water stability"]},
        ],
        "designs": [
            (("The limited {property} of {material} hinders their practical use. Here we apply "
             "{strategy} to prepare modified {material}, characterised by X-ray diffraction and "
             "electron microscopy. The modified samples show a {pct}% higher {property} and keep "
             "{r}% of their initial performance after {c} hours of ageing. {Strategy} offers a "
             "simple route to better {material}."),
             ["material", "strategy", "property"]),
            (("We report {material} produced by {strategy} with a tunable microstructure. "
             "Compared with untreated samples, the {property} improved by {pct}% and the "
             "{property2} by {lo}%. Density functional theory calculations explain the effect "
             "of {strategy} on {property}."),
             ["material", "strategy", "property", "density functional theory"]),
        ],
    },
    "education": {
        "common": {
            "factor": ["self-efficacy", "peer feedback", "reflective journaling", "growth mindset",
                       "learning analytics", "gamification", "formative assessment"],
            "method": ["structural equation modelling", "multilevel regression",
                       "latent profile analysis", "a quasi-experimental design"],
        },
        "groups": [
            {"topic": ["online learning"], "population": ["undergraduate students",
                                                          "adult learners"]},
            {"topic": ["flipped classrooms"], "population": ["undergraduate students",
                                                             "nursing students",
                                                             "engineering students"]},
            {"topic": ["project-based learning"], "population": ["secondary school students",
                                                                 "engineering students"]},
            {"topic": ["teacher professional development"],
             "population": ["secondary school teachers", "primary school teachers"]},
            {"topic": ["reading comprehension"], "population": ["primary school pupils",
                                                                "English language learners"]},
            {"topic": ["mathematics anxiety"], "population": ["primary school pupils",
                                                              "secondary school students"]},
            {"topic": ["student engagement"], "population": ["undergraduate students",
                                                             "secondary school students"]},
            {"topic": ["academic procrastination"], "population": ["undergraduate students",
                                                                   "graduate students"]},
            {"topic": ["digital literacy"], "population": ["secondary school teachers",
                                                           "adult learners"]},
        ],
        "designs": [
            (("This study examined how {factor} relates to {topic} among {population}. Using "
             "{method}, we analysed survey data from {n} {population} in {k} institutions. "
             "{Factor} was positively associated with {topic} (beta = 0.{b}), partly through "
             "{factor2}. The findings highlight the role of {factor} in supporting {topic}."),
             ["factor", "topic", "population"]),
            (("To test whether {factor} improves {topic}, we followed {n} {population} over one "
             "semester. Participants in the {factor} condition scored {pct}% higher than the "
             "comparison group, and interviews pointed to {factor2} as a mechanism. We discuss "
             "what this means for {topic} among {population}."),
             ["factor", "topic", "population"]),
        ],
    },
    "transportation": {
        "common": {"city": ["Shenzhen", "Chicago", "London", "Singapore", "Chengdu",
                            "Melbourne"]},
        "groups": [
            {"problem": ["traffic flow prediction"],
             "data": ["loop detector data", "GPS trajectories"],
             "method": ["spatiotemporal graph convolution", "long short-term memory networks"]},
            {"problem": ["pavement crack detection"],
             "data": ["vehicle-mounted camera images", "drone imagery"],
             "method": ["convolutional neural networks", "YOLOv8"]},
            {"problem": ["bridge health monitoring"],
             "data": ["vibration signals", "strain measurements"],
             "method": ["fibre Bragg grating sensors", "digital twins"]},
            {"problem": ["ride-hailing demand forecasting"],
             "data": ["GPS trajectories", "trip order records"],
             "method": ["spatiotemporal graph convolution", "long short-term memory networks"]},
            {"problem": ["electric vehicle charging"],
             "data": ["charging session records", "smart meter data"],
             "method": ["deep reinforcement learning", "mixed-integer programming"]},
            {"problem": ["metro timetable optimization"],
             "data": ["smart card data", "passenger counts"],
             "method": ["mixed-integer programming", "deep reinforcement learning"]},
            {"problem": ["pedestrian safety"], "data": ["crash records", "video trajectories"],
             "method": ["agent-based simulation", "random parameters logit models"]},
            {"problem": ["autonomous driving"],
             "data": ["lidar point clouds", "naturalistic driving data"],
             "method": ["deep reinforcement learning", "digital twins"]},
        ],
        "designs": [
            (("Reliable {problem} is critical for city operations. We develop a model that "
             "integrates {method} with {data} collected in {city} over {years} years. Compared "
             "with classical models, the error fell by {pct}%. The framework can support "
             "{problem} in other large cities."),
             ["problem", "method", "data"]),
            (("We present a {problem} system for {city} built on {method}. Using {data} from {n} "
             "locations, it is {pct}% more accurate than current practice and runs in real time. "
             "Field tests show that {method} scales to network-wide {problem}."),
             ["problem", "method", "data", "city"]),
        ],
    },
}

# -- Chinese -----------------------------------------------------------------------------------

ZH: dict[str, dict] = {
    "影像诊断": {
        "common": {"指标": ["敏感度", "特异度", "诊断准确率", "阳性预测值", "阴性预测值"]},
        "groups": [
            {"疾病": ["甲状腺结节"], "方法": ["超声弹性成像", "超声造影", "细针穿刺细胞学检查",
                                      "人工智能辅助诊断"],
             "对照": ["常规超声"], "金标准": ["术后病理"], "人群": ["体检人群", "老年患者"]},
            {"疾病": ["乳腺癌"], "方法": ["超声弹性成像", "对比增强乳腺X线摄影", "磁共振扩散加权成像"],
             "对照": ["乳腺X线摄影"], "金标准": ["术后病理"], "人群": ["致密型乳腺女性", "高危女性"]},
            {"疾病": ["肝纤维化"], "方法": ["瞬时弹性成像", "磁共振弹性成像", "剪切波弹性成像"],
             "对照": ["血清学指标"], "金标准": ["肝穿刺活检"], "人群": ["慢性乙型肝炎患者"]},
            {"疾病": ["急性阑尾炎"], "方法": ["床旁超声", "低剂量CT"], "对照": ["临床体格检查"],
             "金标准": ["手术所见"], "人群": ["儿童患者", "妊娠期妇女"]},
            {"疾病": ["肺结节"], "方法": ["低剂量CT", "人工智能辅助诊断", "PET-CT"],
             "对照": ["胸部X线平片"], "金标准": ["术后病理"], "人群": ["体检人群", "长期吸烟者"]},
            {"疾病": ["前列腺癌"], "方法": ["多参数磁共振成像", "PSMA PET-CT"],
             "对照": ["血清PSA检测"], "金标准": ["穿刺病理"], "人群": ["老年男性"]},
            {"疾病": ["深静脉血栓"], "方法": ["加压超声", "床旁超声"], "对照": ["D-二聚体检测"],
             "金标准": ["静脉造影"], "人群": ["住院患者", "骨科术后患者"]},
            {"疾病": ["颈动脉斑块"], "方法": ["超声造影", "高分辨率磁共振成像"],
             "对照": ["常规超声"], "金标准": ["随访结果"], "人群": ["缺血性卒中患者", "老年患者"]},
        ],
        "designs": [
            (("目的 探讨{方法}在{疾病}诊断中的应用价值。方法 回顾性分析{n}例{疾病}患者的资料，均行"
             "{方法}及{对照}检查，以{金标准}为金标准。结果 {方法}的{指标}为{hi}%，高于{对照}的"
             "{lo}%（P<0.05）。结论 {方法}可提高{疾病}的{指标}。"),
             ["疾病", "方法", "指标"]),
            (("目的 评价{方法}对{人群}{疾病}的诊断效能。方法 前瞻性纳入{n}例疑似{疾病}的{人群}，"
             "比较{方法}与{对照}的结果。结果 {方法}诊断{疾病}的{指标}为{hi}%。结论 {方法}适用"
             "于{人群}{疾病}的筛查。"),
             ["疾病", "方法", "人群", "指标"]),
        ],
    },
    "临床治疗": {
        "common": {},
        "groups": [
            {"疾病": ["2型糖尿病"], "干预": ["达格列净", "有氧运动训练", "延续性护理", "低碳水化合物饮食"],
             "结局": ["血糖水平", "糖化血红蛋白", "生活质量"]},
            {"疾病": ["原发性高血压"], "干预": ["八段锦", "限盐干预", "延续性护理", "有氧运动训练"],
             "结局": ["血压控制率", "服药依从性", "生活质量"]},
            {"疾病": ["慢性心力衰竭"], "干预": ["心脏康复训练", "延续性护理", "沙库巴曲缬沙坦"],
             "结局": ["心功能", "再住院率", "生活质量"]},
            {"疾病": ["慢性阻塞性肺疾病"], "干预": ["呼吸功能锻炼", "肺康复训练", "穴位贴敷"],
             "结局": ["肺功能", "急性加重次数", "生活质量"]},
            {"疾病": ["膝骨关节炎"], "干预": ["针刺疗法", "中药熏洗", "玻璃酸钠关节腔注射"],
             "结局": ["疼痛评分", "关节功能", "生活质量"]},
            {"疾病": ["脑卒中"], "干预": ["早期康复训练", "针刺疗法", "镜像疗法"],
             "结局": ["运动功能", "日常生活能力", "生活质量"]},
            {"疾病": ["失眠症"], "干预": ["认知行为疗法", "针刺疗法", "耳穴压豆"],
             "结局": ["睡眠质量", "焦虑情绪"]},
            {"疾病": ["抑郁症"], "干预": ["认知行为疗法", "有氧运动训练", "正念疗法"],
             "结局": ["抑郁症状", "睡眠质量", "生活质量"]},
        ],
        "designs": [
            (("目的 观察{干预}治疗{疾病}的临床疗效。方法 将{n}例{疾病}患者随机分为两组，观察组在"
             "常规治疗基础上加用{干预}，疗程{weeks}周。结果 观察组总有效率为{hi}%，{结局}改善优于"
             "对照组（P<0.05）。结论 {干预}能有效改善{疾病}患者的{结局}。"),
             ["疾病", "干预", "结局"]),
            (("目的 分析{干预}对{疾病}患者{结局}的影响。方法 选取{n}例{疾病}患者，对照组采用常规"
             "护理，研究组联合{干预}。结果 干预{weeks}周后研究组{结局}及{结局2}均优于对照组。结论 "
             "{干预}有助于提高{疾病}患者的{结局}。"),
             ["疾病", "干预", "结局", "结局2"]),
        ],
    },
    "人工智能": {
        "common": {
            "方法": ["图神经网络", "对比学习", "知识蒸馏", "低秩适配", "联邦学习", "注意力机制",
                   "迁移学习", "自监督预训练", "课程学习"],
            "场景": ["小样本场景", "边缘设备", "噪声标签", "类别不平衡", "跨领域场景"],
            "辅助": ["多尺度特征融合", "自适应损失函数", "数据增强", "预训练语言模型"],
        },
        "groups": [
            {"任务": ["命名实体识别"], "评价": ["F1值"]},
            {"任务": ["图像分割"], "评价": ["平均交并比", "Dice系数"]},
            {"任务": ["机器翻译"], "评价": ["BLEU值"]},
            {"任务": ["异常检测"], "评价": ["F1值", "召回率"]},
            {"任务": ["文本分类"], "评价": ["准确率", "宏平均F1值"]},
            {"任务": ["语音识别"], "评价": ["字错误率"]},
            {"任务": ["目标检测"], "评价": ["平均精度均值"]},
            {"任务": ["知识图谱补全"], "评价": ["平均倒数排名"]},
            {"任务": ["情感分析"], "评价": ["准确率"]},
            {"任务": ["推荐系统"], "评价": ["召回率", "归一化折损累计增益"]},
        ],
        "designs": [
            (("针对{场景}下{任务}效果不佳的问题，提出一种基于{方法}的模型。该模型利用{方法}提取深层"
             "特征，并引入{辅助}增强泛化能力。在{k}个公开数据集上的实验表明，所提方法的{评价}较基线"
             "改善{d}个百分点。"),
             ["任务", "方法", "场景", "辅助"]),
            (("{任务}在{场景}中面临标注数据稀缺的挑战。本文结合{方法}与{辅助}，设计了一种轻量级"
             "{任务}框架。实验结果表明，该框架在参数量减少{pct}%的同时保持了较高的{评价}。"),
             ["任务", "方法", "辅助"]),
        ],
    },
    "农学": {
        "common": {},
        "groups": [
            {"作物": ["冬小麦"], "措施": ["亏缺灌溉", "秸秆覆盖", "氮肥减施", "保护性耕作"],
             "指标": ["产量", "水分利用效率", "氮素利用率"], "地区": ["华北平原", "黄土高原"]},
            {"作物": ["水稻"], "措施": ["干湿交替灌溉", "秸秆还田", "氮肥减施", "有机肥替代"],
             "指标": ["产量", "稻米品质", "氮素利用率"], "地区": ["长江中下游", "东北稻区"]},
            {"作物": ["夏玉米"], "措施": ["滴灌", "间作", "秸秆覆盖", "保护性耕作"],
             "指标": ["产量", "水分利用效率", "土壤有机碳"], "地区": ["华北平原", "黄淮海地区"]},
            {"作物": ["大豆"], "措施": ["间作", "生物炭", "根瘤菌接种"],
             "指标": ["产量", "结瘤数", "土壤微生物多样性"], "地区": ["东北黑土区"]},
            {"作物": ["设施番茄"], "措施": ["滴灌", "有机肥替代", "生物炭", "水肥一体化"],
             "指标": ["果实品质", "产量", "水分利用效率"], "地区": ["山东寿光", "华北地区"]},
            {"作物": ["苹果"], "措施": ["行间生草", "水肥一体化", "有机肥替代"],
             "指标": ["果实品质", "土壤有机碳", "产量"], "地区": ["黄土高原", "渤海湾地区"]},
            {"作物": ["马铃薯"], "措施": ["膜下滴灌", "氮肥减施", "秸秆覆盖"],
             "指标": ["块茎产量", "水分利用效率", "氮素利用率"], "地区": ["西北旱区", "阴山北麓"]},
            {"作物": ["棉花"], "措施": ["膜下滴灌", "亏缺灌溉", "氮肥减施"],
             "指标": ["皮棉产量", "水分利用效率"], "地区": ["新疆绿洲", "南疆地区"]},
        ],
        "designs": [
            (("为明确{措施}对{地区}{作物}{指标}的影响，开展了{years}年田间定位试验。结果表明，{措施}"
             "处理的{作物}{指标}较常规管理提高{pct}%，{指标2}也显著增加。{措施}可作为{地区}{作物}"
             "绿色生产的推荐措施。"),
             ["作物", "措施", "指标", "地区"]),
            (("以{作物}为材料，研究了{措施}与{措施2}对{指标}的影响。{措施}使{指标}提高{pct}%，"
             "{措施2}则主要改善{指标2}。两者配合可实现{作物}的提质增效。"),
             ["作物", "措施", "措施2", "指标"]),
        ],
    },
    "环境科学": {
        "common": {"地区": ["长江三角洲", "京津冀地区", "珠江三角洲", "汾渭平原", "成渝地区",
                          "太湖流域"]},
        "groups": [
            {"污染物": ["PM2.5"], "介质": ["城市大气", "室内空气"],
             "方法": ["正定矩阵因子分解", "土地利用回归模型", "卫星遥感反演", "健康风险评价"]},
            {"污染物": ["微塑料"], "介质": ["近岸沉积物", "城市河流", "农田土壤"],
             "方法": ["显微拉曼光谱", "傅里叶变换红外光谱", "生态风险评价"]},
            {"污染物": ["重金属"], "介质": ["农田土壤", "河流沉积物", "近岸沉积物"],
             "方法": ["正定矩阵因子分解", "健康风险评价", "地统计分析"]},
            {"污染物": ["硝酸盐"], "介质": ["地下水", "饮用水源地"],
             "方法": ["稳定同位素示踪", "贝叶斯混合模型", "健康风险评价"]},
            {"污染物": ["臭氧"], "介质": ["城市大气"],
             "方法": ["观测模型", "机器学习模型", "卫星遥感反演"]},
            {"污染物": ["抗生素抗性基因"], "介质": ["污水处理厂", "城市河流", "农田土壤"],
             "方法": ["宏基因组测序", "荧光定量PCR"]},
            {"污染物": ["多环芳烃"], "介质": ["近岸沉积物", "城市土壤", "室内灰尘"],
             "方法": ["特征比值法", "正定矩阵因子分解", "健康风险评价"]},
            {"污染物": ["全氟化合物"], "介质": ["饮用水源地", "地下水", "城市河流"],
             "方法": ["高分辨质谱", "健康风险评价"]},
        ],
        "designs": [
            (("为查明{地区}{介质}中{污染物}的污染特征及来源，于{y1}年采集{n}个样品，并采用{方法}"
             "进行分析。结果显示，工业排放和农业活动是{污染物}的主要来源，贡献率达{pct}%。研究可为"
             "{地区}{污染物}的精准防控提供依据。"),
             ["污染物", "介质", "方法", "地区"]),
            (("基于{y1}—{y2}年的监测数据，利用{方法}评估了{地区}{介质}中{污染物}的时空变化。"
             "结果表明，{污染物}浓度下降了{pct}%，但工业园区附近仍存在高值区。"),
             ["污染物", "介质", "方法"]),
        ],
    },
    "材料能源": {
        "common": {},
        "groups": [
            {"材料": ["钙钛矿太阳能电池"], "策略": ["缺陷钝化", "界面工程", "添加剂工程"],
             "性能": ["光电转换效率", "运行稳定性"]},
            {"材料": ["锂硫电池"], "策略": ["杂原子掺杂", "隔膜改性", "催化宿主设计"],
             "性能": ["循环稳定性", "倍率性能", "硫利用率"]},
            {"材料": ["钠离子电池"], "策略": ["杂原子掺杂", "碳包覆", "电解液工程"],
             "性能": ["倍率性能", "循环稳定性", "首次库仑效率"]},
            {"材料": ["固态电解质"], "策略": ["异价掺杂", "界面工程", "聚合物共混"],
             "性能": ["离子电导率", "电化学稳定性"]},
            {"材料": ["超级电容器"], "策略": ["杂原子掺杂", "静电纺丝", "水热法"],
             "性能": ["比电容", "循环稳定性"]},
            {"材料": ["高熵合金"], "策略": ["3D打印", "热处理", "晶粒细化"],
             "性能": ["抗拉强度", "塑性", "耐腐蚀性能"]},
            {"材料": ["水凝胶电解质"], "策略": ["双网络设计", "盐工程"],
             "性能": ["离子电导率", "拉伸性能", "抗冻性能"]},
            {"材料": ["金属有机框架"], "策略": ["配体功能化", "缺陷工程", "水热法"],
             "性能": ["CO2吸附容量", "水稳定性"]},
        ],
        "designs": [
            (("{材料}的{性能}不足，限制了其实际应用。本文采用{策略}制备了改性{材料}。结果表明，改性"
             "后{材料}的{性能}提升了{pct}%，老化{c}小时后性能保持率为{r}%。{策略}为高性能{材料}"
             "的设计提供了新思路。"),
             ["材料", "策略", "性能"]),
            (("通过{策略}构筑了具有多级结构的{材料}，并结合密度泛函理论计算研究其作用机理。与未处理"
             "样品相比，{性能}提高了{pct}%，{性能2}提高了{lo}%。"),
             ["材料", "策略", "性能", "密度泛函理论"]),
        ],
    },
    "教育研究": {
        "common": {
            "因素": ["自我效能感", "同伴反馈", "反思日志", "成长型思维", "学习分析", "游戏化教学",
                   "形成性评价"],
            "方法": ["结构方程模型", "多层线性模型", "潜在剖面分析", "问卷调查"],
        },
        "groups": [
            {"主题": ["在线学习"], "对象": ["大学生", "成人学习者"]},
            {"主题": ["翻转课堂"], "对象": ["大学生", "护理专业学生", "高职学生"]},
            {"主题": ["项目式学习"], "对象": ["中学生", "工科大学生"]},
            {"主题": ["教师专业发展"], "对象": ["中学教师", "小学教师"]},
            {"主题": ["学业拖延"], "对象": ["大学生", "研究生"]},
            {"主题": ["数学焦虑"], "对象": ["小学生", "初中生"]},
            {"主题": ["学习投入"], "对象": ["大学生", "高职学生", "中学生"]},
            {"主题": ["数字素养"], "对象": ["中学教师", "大学生"]},
        ],
        "designs": [
            (("为探究{因素}对{对象}{主题}的影响，采用{方法}对{n}名{对象}进行分析。结果表明，{因素}"
             "能正向预测{主题}，且{因素2}起部分中介作用。应重视{因素}的培养，以促进{对象}的"
             "{主题}。"),
             ["因素", "主题", "对象", "方法"]),
            (("本研究以{n}名{对象}为对象，考察{因素}干预对{主题}的作用。一学期后，实验组{主题}得分"
             "较对照组高{pct}%。访谈发现{因素2}是重要的作用机制。"),
             ["因素", "主题", "对象"]),
        ],
    },
    "交通工程": {
        "common": {"城市": ["深圳市", "成都市", "上海市", "西安市", "杭州市", "武汉市"]},
        "groups": [
            {"对象": ["短时交通流预测"], "数据": ["线圈检测器数据", "GPS轨迹数据"],
             "方法": ["时空图卷积网络", "长短期记忆网络"]},
            {"对象": ["路面裂缝检测"], "数据": ["车载相机图像", "无人机航拍图像"],
             "方法": ["卷积神经网络", "YOLOv8"]},
            {"对象": ["桥梁健康监测"], "数据": ["振动信号", "应变监测数据"],
             "方法": ["光纤光栅传感", "数字孪生"]},
            {"对象": ["网约车需求预测"], "数据": ["GPS轨迹数据", "订单数据"],
             "方法": ["时空图卷积网络", "长短期记忆网络"]},
            {"对象": ["电动汽车充电调度"], "数据": ["充电桩运行数据", "智能电表数据"],
             "方法": ["深度强化学习", "混合整数规划"]},
            {"对象": ["地铁时刻表优化"], "数据": ["公交刷卡数据", "客流统计数据"],
             "方法": ["混合整数规划", "深度强化学习"]},
            {"对象": ["行人过街安全"], "数据": ["交通事故数据", "视频轨迹数据"],
             "方法": ["元胞自动机仿真", "随机参数Logit模型"]},
            {"对象": ["自动驾驶"], "数据": ["激光雷达点云", "自然驾驶数据"],
             "方法": ["深度强化学习", "数字孪生"]},
        ],
        "designs": [
            (("{对象}对城市交通管理具有重要意义。本文以{城市}为例，基于{数据}构建了融合{方法}的"
             "模型。实验表明，与传统方法相比，该模型的误差降低了{pct}%。研究可为{城市}智能交通"
             "建设提供参考。"),
             ["对象", "方法", "数据", "城市"]),
            (("针对{对象}效率低的问题，提出一种基于{方法}的方法。利用{城市}{n}个站点的{数据}进行"
             "验证，结果表明该方法的准确率提高了{pct}%。"),
             ["对象", "方法", "数据"]),
        ],
    },
}

PROMPTS = {"zh": "抽取出下文中的关键词：\n", "en": "Extract the keywords from the following abstract:\n"}
SEPARATOR = ";"


def _numbers(rng: random.Random) -> dict[str, object]:
    y1 = rng.randint(2012, 2020)
    hi = round(rng.uniform(72, 96), 1)
    return {"n": rng.choice([48, 64, 86, 96, 120, 126, 148, 186, 212, 240, 318, 426]),
            "hi": hi, "lo": round(hi - rng.uniform(6, 25), 1),
            "pct": round(rng.uniform(8, 45), 1), "p": rng.randint(1, 4), "y1": y1,
            "y2": y1 + rng.randint(2, 4), "weeks": rng.choice([4, 6, 8, 12, 24]),
            "k": rng.randint(2, 6), "b": rng.randint(12, 48), "d": rng.randint(2, 9),
            "years": rng.randint(2, 6), "r": round(rng.uniform(80, 98), 1),
            "c": rng.choice([200, 500, 1000, 1500])}


def _cap(term: str) -> str:
    return term[0].upper() + term[1:]


def _compose(rng: random.Random, field: dict, design: tuple[str, list[str]]
             ) -> tuple[str, list[str]]:
    text, keyword_slots = design
    vocab = {**field["common"], **rng.choice(field["groups"])}
    values: dict[str, object] = dict(_numbers(rng))
    terms: dict[str, str] = {}
    for slot, words in vocab.items():
        first, second = rng.sample(words, 2) if len(words) > 1 else (words[0], words[0])
        terms[slot], terms[f"{slot}2"] = first, second
    for slot, term in terms.items():
        values[slot] = term
        if slot.isascii():
            values[_cap(slot)] = _cap(term)
    abstract = text.format(**values)
    keywords = [terms.get(slot, slot) for slot in keyword_slots]
    for kw in keywords:  # faithful: every reference keyword is in its abstract
        assert kw.lower() in abstract.lower(), (kw, abstract)
    return abstract, keywords


def build(seed: int = 19, per_design: int = 10) -> list[dict]:
    """``per_design`` abstracts for every design of every field, in both languages."""
    rng = random.Random(seed)
    records: list[dict] = []
    seen: set[str] = set()
    for lang, fields in (("zh", ZH), ("en", EN)):
        for fi, field in enumerate(fields.values()):
            for di, design in enumerate(field["designs"]):
                made = 0
                while made < per_design:
                    abstract, keywords = _compose(rng, field, design)
                    if abstract in seen:
                        continue
                    seen.add(abstract)
                    made += 1
                    records.append({"id": f"{lang}-{fi + 1}{di + 1}-{made:02d}", "lang": lang,
                                    "field": list(fields)[fi], "abstract": abstract,
                                    "keywords": keywords})
    return records


def prompt(record: dict) -> str:
    """The user turn of a keyword sample: the instruction of the record's language + abstract."""
    return PROMPTS[record["lang"]] + record["abstract"]


def answer(record: dict) -> str:
    """The reference answer: the keywords joined by ``;``."""
    return SEPARATOR.join(record["keywords"])


def load(path: Path = CORPUS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def main() -> None:
    records = build()
    CORPUS.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                      encoding="utf-8")
    langs = {lang: sum(1 for r in records if r["lang"] == lang) for lang in ("zh", "en")}
    print(f"wrote {len(records)} abstracts ({langs}) to {CORPUS}")


if __name__ == "__main__":
    main()
